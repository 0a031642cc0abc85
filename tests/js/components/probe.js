#!/usr/bin/env node
// A test component written with the AWS IoT Device SDK v2 for JavaScript, deployed by
// tests/integration/component_sdk_test.cpp from a recipe (the SDK comes through NODE_PATH).
// It connects with its SVCUID, subscribes to `topic` (configuration), publishes to it and
// waits for its own message, reads its configuration, reports RUNNING with UpdateState, then
// stays up until it is stopped. Each result is one stdout line, "probe: " + JSON:
//   {"step": NAME, "ok": true, ...} or {"step": NAME, "ok": false, "error": TEXT}
//   {"step": "done", "failures": N}
'use strict';

const { greengrasscoreipc } = require('aws-iot-device-sdk-v2');

function out(obj) {
  process.stdout.write(`probe: ${JSON.stringify(obj)}\n`);
}

function describe(e) {
  if (e && e.serviceError) return `${e.serviceError.message || 'service error'}`;
  return String((e && (e.description || e.message)) || e);
}

function withTimeout(promise, ms, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} did not finish within ${ms} ms`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

let failures = 0;

// Runs one step; its result (an object merged into the line) or its error is printed.
async function step(name, fn) {
  try {
    const extra = await withTimeout(fn(), 15000, name);
    out(Object.assign({ step: name, ok: true }, extra || {}));
    return true;
  } catch (e) {
    failures++;
    out({ step: name, ok: false, error: describe(e) });
    return false;
  }
}

async function main() {
  const client = greengrasscoreipc.createClient();
  const connected = await step('connect', async () => {
    await client.connect();
    return { svcuid: Boolean(process.env.SVCUID) };
  });
  if (!connected) {
    out({ step: 'done', failures });
    process.exit(1);
  }

  let config = {};
  await step('getConfiguration', async () => {
    const r = await client.getConfiguration({ keyPath: [] });
    config = r.value || {};
    return { componentName: r.componentName, value: config };
  });
  const topic = config.topic || 'probe/echo';

  const received = [];
  let onMessage = () => {};
  await step('subscribeToTopic', async () => {
    const op = client.subscribeToTopic({
      topic,
      receiveMode: greengrasscoreipc.model.ReceiveMode.RECEIVE_ALL_MESSAGES,
    });
    op.on('message', (m) => {
      const j = m.jsonMessage;
      received.push({ topic: j && j.context ? j.context.topic : undefined, message: j ? j.message : m });
      onMessage();
    });
    await op.activate();
    return { topic };
  });

  const nonce = `${process.pid}-${Date.now()}`;
  await step('publishToTopic', async () => {
    await client.publishToTopic({ topic, publishMessage: { jsonMessage: { message: { nonce } } } });
    return { topic, nonce };
  });

  await step('receive', async () => {
    const mine = () => received.find((r) => r.message && r.message.nonce === nonce);
    if (!mine()) await new Promise((resolve) => (onMessage = () => mine() && resolve()));
    return mine();
  });

  await step('updateState', async () => {
    await client.updateState({ state: greengrasscoreipc.model.ReportedLifecycleState.RUNNING });
    return { state: 'RUNNING' };
  });

  out({ step: 'done', failures });

  // Stay up (RUNNING) until canopyd stops the component.
  const keepAlive = setInterval(() => {}, 60000);
  const stop = () => {
    clearInterval(keepAlive);
    client.close().finally(() => process.exit(0));
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}

main().catch((e) => {
  process.stderr.write(`probe: ${describe(e)}\n`);
  process.exit(1);
});
