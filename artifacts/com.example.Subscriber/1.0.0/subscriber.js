#!/usr/bin/env node
// com.example.Subscriber: subscribes to `topicFilter` (configuration, default sensors/#) with
// the AWS IoT Device SDK v2 for JavaScript and logs every reading to stdout, so that
// `canopy logs com.example.Subscriber` shows them. The SDK is found through NODE_PATH, which
// the recipe sets from the configuration key `nodeModules`.
'use strict';

const { greengrasscoreipc } = require('aws-iot-device-sdk-v2');

const DEFAULT_FILTER = 'sensors/#';

function log(text) {
  process.stdout.write(`${text}\n`);
}

function describe(e) {
  if (e && e.serviceError) return `${e.serviceError.message || 'service error'}`;
  return String((e && (e.description || e.message)) || e);
}

function payload(m) {
  if (m.jsonMessage) {
    return { topic: m.jsonMessage.context && m.jsonMessage.context.topic, text: JSON.stringify(m.jsonMessage.message) };
  }
  if (m.binaryMessage) {
    const bytes = m.binaryMessage.message;
    return {
      topic: m.binaryMessage.context && m.binaryMessage.context.topic,
      text: bytes === undefined ? '' : Buffer.from(bytes).toString('utf8'),
    };
  }
  return { topic: undefined, text: JSON.stringify(m) };
}

async function main() {
  const client = greengrasscoreipc.createClient();
  client.on('disconnection', () => {
    log('subscriber: IPC connection lost; exiting so that canopyd restarts the component');
    process.exit(1);
  });
  await client.connect();

  const response = await client.getConfiguration({ keyPath: [] });
  const config = response.value || {};
  const filter = typeof config.topicFilter === 'string' && config.topicFilter !== '' ? config.topicFilter : DEFAULT_FILTER;

  const subscription = client.subscribeToTopic({ topic: filter });
  subscription.on('message', (m) => {
    const { topic, text } = payload(m);
    log(`subscriber: reading on ${topic}: ${text}`);
  });
  subscription.on('streamError', (e) => {
    log(`subscriber: subscription to ${filter} failed: ${describe(e)}`);
    process.exit(1);
  });
  await subscription.activate();
  log(`subscriber: subscribed to ${filter}`);

  await client.updateState({ state: greengrasscoreipc.model.ReportedLifecycleState.RUNNING });

  const stop = async () => {
    log('subscriber: stopping');
    try {
      await client.close();
    } finally {
      process.exit(0);
    }
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}

main().catch((e) => {
  process.stderr.write(`subscriber: ${describe(e)}\n`);
  process.exit(1);
});
