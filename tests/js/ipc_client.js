#!/usr/bin/env node
// A scripted Greengrass IPC client built on the real AWS IoT Device SDK v2 for JavaScript
// (greengrasscoreipc). Canopy's integration tests (tests/integration/ipc_sdk_test.cpp) use it
// to drive canopyd exactly as a component written against the SDK would.
//
// Usage: node ipc_client.js SCRIPT.json
//
// The connection comes from the environment, as for any component:
//   AWS_GG_NUCLEUS_DOMAIN_SOCKET_FILEPATH_FOR_COMPONENT  the IPC socket
//   SVCUID                                               the IPC token
//
// SCRIPT.json: {"totalTimeoutMs": 60000, "steps": [STEP, ...]}
// Each STEP is {"op": NAME, ...}; any step may say "expectError": "<ShapeName>" (e.g.
// "UnauthorizedError", or "HandshakeError" for connect), in which case it counts as a success
// only if it fails with exactly that error (a list allows any of several names). Steps:
//   connect                          {timeoutMs}
//   publishToTopic                   {topic, json | binaryBase64 | text}
//   subscribeToTopic                 {id, topic, receiveMode?}       (prints its line once active)
//   publishToIoTCore                 {topicName, qos ("0"|"1"), text, userProperties?}
//   subscribeToIoTCore               {id, topicName, qos}             events: {"event": "iotCoreMessage",
//                                                                      "id", "topic", "payload" (text)}
//   subscribeToConfigurationUpdate   {id, componentName?, keyPath?}
//   subscribeToValidateConfigurationUpdates {id, answer: ACCEPTED|REJECTED, message?}
//   waitEvents (alias waitMessages)  {id, count, timeoutMs}          at least `count` events on `id`
//   waitReports                      {id, count, timeoutMs}          validity reports sent on `id`
//   expectEventCount                 {id, count}                     exactly `count` events so far
//   getConfiguration                 {componentName?, keyPath?}
//   updateConfiguration              {keyPath?, valueToMerge, timestamp (epoch s) | timestampNow}
//                                    (the SDK requires a timestamp)
//   updateState                      {state}
//   rawCall                          {operation, request, timeoutMs} any operation name (e.g.
//                                    canopy#GetStatus) through the SDK's generic eventstream_rpc layer
//   closeStream                      {id}
//   sleep                            {ms}
//   close
//
// Output: one JSON object per line on stdout:
//   {"step": op, "id"?: ..., "ok": true, "response"?: {...}, "expected": true}
//   {"step": op, "ok": false, "error": {"name": ..., "message": ..., "type": ...}, "expected": bool}
//   {"event": "message", "id": ..., "topic": ..., "json"|"binary": ...}       (binary in base64)
//   {"event": "configurationUpdate", "id": ..., "componentName": ..., "keyPath": [...]}
//   {"event": "validateConfigurationUpdate", "id": ..., "deploymentId": ..., "configuration": {...}}
//   {"event": "streamError"|"ended", "id": ...}
//   {"done": true, "failures": N}
// Exit code: 0 when every step ended as expected, 1 otherwise, 2 on a bad script, 3 when the
// whole script timed out.
'use strict';

const fs = require('fs');
const path = require('path');

const sdk = require(path.join(__dirname, 'node_modules', 'aws-iot-device-sdk-v2'));
const { greengrasscoreipc, eventstream_rpc } = sdk;
const { eventstream } = require(path.join(__dirname, 'node_modules', 'aws-crt'));

function out(obj) {
  process.stdout.write(JSON.stringify(obj) + '\n');
}

function finish(code) {
  // Give stdout a moment to flush when it is a pipe; files are written synchronously.
  process.exitCode = code;
  setImmediate(() => process.exit(code));
}

let script;
try {
  script = JSON.parse(fs.readFileSync(process.argv[2], 'utf8'));
  if (!Array.isArray(script.steps)) throw new Error('"steps" must be a list');
} catch (e) {
  out({ fatal: 'bad script', message: String(e && e.message) });
  process.exit(2);
}

const totalTimeout = setTimeout(() => {
  out({ fatal: 'timeout', message: `the script did not finish within ${script.totalTimeoutMs || 60000} ms` });
  process.exit(3);
}, script.totalTimeoutMs || 60000);

let failures = 0;
let client;
const streams = new Map();  // id -> {operation, events: [], waiters: []}

// Short shape name of a modeled error. The SDK picks the deserializer by the response's
// service-model-type header; wrapping the error deserializers records which one it picked.
function labelErrorShapes(model) {
  for (const [name, fn] of model.deserializers) {
    if (!name.endsWith('Error')) continue;
    model.deserializers.set(name, (message) => {
      const value = fn(message);
      Object.defineProperty(value, '__shape', { value: name.replace(/^.*#/, ''), enumerable: false });
      return value;
    });
  }
}

function describeError(e) {
  if (e && e.serviceError) {
    return {
      name: e.serviceError.__shape || 'UnknownServiceError',
      message: e.serviceError.message,
      type: 'ServiceError',
    };
  }
  if (e instanceof eventstream_rpc.RpcError) {
    const typeName = eventstream_rpc.RpcErrorType[e.type] || String(e.type);
    let message = e.description;
    if (e.internalError) message += ` (${e.internalError.message || e.internalError})`;
    return { name: typeName, message, type: typeName };
  }
  if (e && e.name === 'StepTimeout') return { name: 'Timeout', message: e.message, type: 'Timeout' };
  return { name: (e && e.name) || 'Error', message: String((e && e.message) || e), type: 'Error' };
}

function withTimeout(promise, ms, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => {
      const err = new Error(`${what} did not finish within ${ms} ms`);
      err.name = 'StepTimeout';
      reject(err);
    }, ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

function stream(id) {
  const s = streams.get(id);
  if (!s) throw new Error(`no stream with id "${id}"`);
  return s;
}

function record(id, event) {
  const s = streams.get(id);
  s.events.push(event);
  out(Object.assign({ id }, event));
  s.waiters = s.waiters.filter((w) => {
    if (s.events.length >= w.count) {
      w.resolve();
      return false;
    }
    return true;
  });
}

function openStream(id, operation) {
  if (streams.has(id)) throw new Error(`stream id "${id}" is already used`);
  const s = { operation, events: [], waiters: [], reports: 0, reportWaiters: [] };
  streams.set(id, s);
  operation.on('streamError', (err) => {
    failures++;
    out({ event: 'streamError', id, error: describeError(err) });
  });
  operation.on('ended', () => out({ event: 'ended', id }));
  return s;
}

function messageEvent(m) {
  if (m.jsonMessage) {
    return {
      event: 'message',
      topic: m.jsonMessage.context ? m.jsonMessage.context.topic : undefined,
      json: m.jsonMessage.message,
    };
  }
  if (m.binaryMessage) {
    const bytes = m.binaryMessage.message;
    return {
      event: 'message',
      topic: m.binaryMessage.context ? m.binaryMessage.context.topic : undefined,
      binary: bytes === undefined ? '' : Buffer.from(bytes).toString('base64'),
    };
  }
  return { event: 'message', unknown: m };
}

const ops = {
  async connect(step) {
    client = greengrasscoreipc.createClient();
    labelErrorShapes(client.serviceModel);
    client.on('disconnection', () => out({ event: 'disconnection' }));
    await withTimeout(client.connect(), step.timeoutMs || 10000, 'connect');
  },

  async publishToTopic(step) {
    let publishMessage;
    if (step.json !== undefined) publishMessage = { jsonMessage: { message: step.json } };
    else if (step.binaryBase64 !== undefined)
      publishMessage = { binaryMessage: { message: Buffer.from(step.binaryBase64, 'base64') } };
    else publishMessage = { binaryMessage: { message: Buffer.from(step.text || '', 'utf8') } };
    return withTimeout(client.publishToTopic({ topic: step.topic, publishMessage }), step.timeoutMs || 10000,
                       'publishToTopic');
  },

  async subscribeToTopic(step) {
    const request = { topic: step.topic };
    if (step.receiveMode) request.receiveMode = step.receiveMode;
    const op = client.subscribeToTopic(request);
    openStream(step.id, op);
    op.on('message', (m) => record(step.id, messageEvent(m)));
    return withTimeout(op.activate(), step.timeoutMs || 10000, 'subscribeToTopic');
  },

  async publishToIoTCore(step) {
    const request = { topicName: step.topicName, qos: step.qos || '1', payload: Buffer.from(step.text || '') };
    if (step.userProperties) request.userProperties = step.userProperties;
    return withTimeout(client.publishToIoTCore(request), step.timeoutMs || 10000, 'publishToIoTCore');
  },

  async subscribeToIoTCore(step) {
    const op = client.subscribeToIoTCore({ topicName: step.topicName, qos: step.qos || '1' });
    openStream(step.id, op);
    op.on('message', (m) => {
      const msg = m.message || {};
      record(step.id, { event: 'iotCoreMessage', topic: msg.topicName,
                        payload: Buffer.from(msg.payload || '').toString('utf8') });
    });
    return withTimeout(op.activate(), step.timeoutMs || 10000, 'subscribeToIoTCore');
  },

  async subscribeToConfigurationUpdate(step) {
    const request = {};
    if (step.componentName) request.componentName = step.componentName;
    if (step.keyPath) request.keyPath = step.keyPath;
    const op = client.subscribeToConfigurationUpdate(request);
    openStream(step.id, op);
    op.on('message', (m) => {
      const e = m.configurationUpdateEvent || {};
      record(step.id, { event: 'configurationUpdate', componentName: e.componentName, keyPath: e.keyPath });
    });
    return withTimeout(op.activate(), step.timeoutMs || 10000, 'subscribeToConfigurationUpdate');
  },

  async subscribeToValidateConfigurationUpdates(step) {
    const op = client.subscribeToValidateConfigurationUpdates({});
    openStream(step.id, op);
    op.on('message', (m) => {
      const e = m.validateConfigurationUpdateEvent || {};
      record(step.id, {
        event: 'validateConfigurationUpdate',
        deploymentId: e.deploymentId,
        configuration: e.configuration,
      });
      const report = { status: step.answer || 'ACCEPTED', deploymentId: e.deploymentId };
      if (step.message) report.message = step.message;
      withTimeout(client.sendConfigurationValidityReport({ configurationValidityReport: report }), 10000,
                  'sendConfigurationValidityReport')
        .then(() => out({ step: 'sendConfigurationValidityReport', id: step.id, deploymentId: e.deploymentId,
                          status: report.status, ok: true, expected: true }))
        .catch((err) => {
          failures++;
          out({ step: 'sendConfigurationValidityReport', id: step.id, deploymentId: e.deploymentId, ok: false,
                error: describeError(err), expected: false });
        })
        .finally(() => {
          const s = streams.get(step.id);
          s.reports++;
          s.reportWaiters = s.reportWaiters.filter((w) => (s.reports >= w.count ? (w.resolve(), false) : true));
        });
    });
    return withTimeout(op.activate(), step.timeoutMs || 10000, 'subscribeToValidateConfigurationUpdates');
  },

  async waitEvents(step) {
    const s = stream(step.id);
    const count = step.count || 1;
    if (s.events.length < count) {
      await withTimeout(new Promise((resolve) => s.waiters.push({ count, resolve })), step.timeoutMs || 10000,
                        `waiting for ${count} events on ${step.id} (got ${s.events.length})`);
    }
    return { count: s.events.length };
  },

  // Validity reports sent (or failed) on a SubscribeToValidateConfigurationUpdates stream.
  async waitReports(step) {
    const s = stream(step.id);
    const count = step.count || 1;
    if (s.reports < count) {
      await withTimeout(new Promise((resolve) => s.reportWaiters.push({ count, resolve })), step.timeoutMs || 10000,
                        `waiting for ${count} validity reports on ${step.id} (sent ${s.reports})`);
    }
    return { count: s.reports };
  },

  async expectEventCount(step) {
    const s = stream(step.id);
    if (s.events.length !== step.count)
      throw new Error(`stream ${step.id} has ${s.events.length} events, expected ${step.count}`);
    return { count: s.events.length };
  },

  async getConfiguration(step) {
    const request = {};
    if (step.componentName) request.componentName = step.componentName;
    if (step.keyPath) request.keyPath = step.keyPath;
    return withTimeout(client.getConfiguration(request), step.timeoutMs || 10000, 'getConfiguration');
  },

  async updateConfiguration(step) {
    const request = { valueToMerge: step.valueToMerge };
    if (step.keyPath) request.keyPath = step.keyPath;
    if (step.timestamp !== undefined) request.timestamp = new Date(step.timestamp * 1000);
    else if (step.timestampNow) request.timestamp = new Date();
    return withTimeout(client.updateConfiguration(request), step.timeoutMs || 10000, 'updateConfiguration');
  },

  async updateState(step) {
    return withTimeout(client.updateState({ state: step.state }), step.timeoutMs || 10000, 'updateState');
  },

  // Any operation by name (canopy#GetStatus, canopy#UpdateConfiguration) through the SDK's
  // generic RequestResponseOperation, with the operation added to the client's service model.
  async rawCall(step) {
    const model = client.serviceModel;
    const requestShape = `${step.operation}Request`;
    const responseShape = `${step.operation}Response`;
    if (!model.operations.has(step.operation)) {
      model.operations.set(step.operation, {
        requestShape,
        responseShape,
        errorShapes: new Set([
          'aws.greengrass#ServiceError', 'aws.greengrass#UnauthorizedError', 'aws.greengrass#ConflictError',
          'aws.greengrass#FailedUpdateConditionCheckError', 'aws.greengrass#InvalidArgumentsError',
          'aws.greengrass#ResourceNotFoundError', 'aws.greengrass#ComponentNotFoundError',
        ]),
      });
      model.serializers.set(requestShape, (request) => ({
        type: eventstream.MessageType.ApplicationMessage,
        payload: JSON.stringify(request),
      }));
      model.deserializers.set(responseShape,
                              (message) => JSON.parse(Buffer.from(message.payload).toString('utf8') || '{}'));
      model.validators.set(requestShape, () => {});
    }
    const operation = new eventstream_rpc.RequestResponseOperation(
        { name: step.operation, client: client.rpcClient, options: {} }, model);
    return withTimeout(operation.activate(step.request || {}), step.timeoutMs || 10000, step.operation);
  },

  async closeStream(step) {
    await stream(step.id).operation.close();
  },

  async sleep(step) {
    await new Promise((resolve) => setTimeout(resolve, step.ms || 0));
  },

  async close() {
    if (client) await withTimeout(client.close(), 10000, 'close');
  },
};
ops.waitMessages = ops.waitEvents;

async function main() {
  for (const step of script.steps) {
    const fn = ops[step.op];
    if (!fn) {
      out({ fatal: 'bad script', message: `unknown op "${step.op}"` });
      process.exit(2);
    }
    const line = { step: step.op };
    if (step.id !== undefined) line.id = step.id;
    if (step.tag !== undefined) line.tag = step.tag;
    let expected;
    try {
      const response = await fn(step);
      line.ok = true;
      if (response !== undefined) line.response = response;
      expected = !step.expectError;
    } catch (e) {
      line.ok = false;
      line.error = describeError(e);
      const allowed = [].concat(step.expectError === undefined ? [] : step.expectError);
      expected = allowed.includes(line.error.name);
    }
    line.expected = expected;
    out(line);
    if (!expected) {
      failures++;
      if (step.op === 'connect' || step.stopOnFailure) break;
    }
    if (step.op === 'connect' && !line.ok) break;  // nothing more can run without a connection
  }
  if (client) {
    try {
      await withTimeout(client.close(), 5000, 'close');
    } catch (e) {
      // The process exits right after; the socket closes with it.
    }
  }
  clearTimeout(totalTimeout);
  out({ done: true, failures });
  finish(failures === 0 ? 0 : 1);
}

main().catch((e) => {
  out({ fatal: 'internal', message: String((e && e.stack) || e) });
  process.exit(1);
});
