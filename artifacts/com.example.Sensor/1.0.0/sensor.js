#!/usr/bin/env node
// com.example.Sensor: a temperature sensor simulator written with the AWS IoT Device SDK v2 for
// JavaScript (greengrasscoreipc). It reads its configuration over IPC (GetConfiguration), reports
// RUNNING (UpdateState), then publishes one JSON reading to `topic` every `intervalSeconds`
// (PublishToTopic). The SDK is found through NODE_PATH, which the recipe sets from the
// configuration key `nodeModules`. The IPC socket and token come from the environment
// (AWS_GG_NUCLEUS_DOMAIN_SOCKET_FILEPATH_FOR_COMPONENT, SVCUID), as for any component.
'use strict';

const { greengrasscoreipc } = require('aws-iot-device-sdk-v2');

const DEFAULT_TOPIC = 'sensors/temperature';
const DEFAULT_INTERVAL_SECONDS = 5;

function log(text) {
  process.stdout.write(`${text}\n`);
}

// The interval in milliseconds; anything that is not a positive number falls back to the default.
function intervalMs(value) {
  const seconds = Number(value);
  if (!Number.isFinite(seconds) || seconds <= 0) return DEFAULT_INTERVAL_SECONDS * 1000;
  return Math.max(100, Math.round(seconds * 1000));
}

async function main() {
  const client = greengrasscoreipc.createClient();
  client.on('disconnection', () => {
    log('sensor: IPC connection lost; exiting so that canopyd restarts the component');
    process.exit(1);
  });
  await client.connect();

  const response = await client.getConfiguration({ keyPath: [] });
  const config = response.value || {};
  const topic = typeof config.topic === 'string' && config.topic !== '' ? config.topic : DEFAULT_TOPIC;
  const period = intervalMs(config.intervalSeconds);
  log(`sensor: publishing to ${topic} every ${period / 1000} s`);

  await client.updateState({ state: greengrasscoreipc.model.ReportedLifecycleState.RUNNING });

  const sensorId = process.env.AWS_IOT_THING_NAME || 'canopy';
  let temperature = 21.0;
  let seq = 0;
  const publish = async () => {
    // A slow random walk between 15 and 30 °C.
    temperature = Math.min(30, Math.max(15, temperature + (Math.random() - 0.5)));
    const reading = {
      sensorId,
      seq: ++seq,
      temperature: Math.round(temperature * 10) / 10,
      unit: 'C',
      timestamp: new Date().toISOString(),
    };
    try {
      await client.publishToTopic({ topic, publishMessage: { jsonMessage: { message: reading } } });
      log(`sensor: published ${JSON.stringify(reading)}`);
    } catch (e) {
      log(`sensor: publish to ${topic} failed: ${describe(e)}`);
    }
  };
  await publish();
  const timer = setInterval(publish, period);

  const stop = async () => {
    clearInterval(timer);
    log('sensor: stopping');
    try {
      await client.close();
    } finally {
      process.exit(0);
    }
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}

function describe(e) {
  if (e && e.serviceError) return `${e.serviceError.message || 'service error'}`;
  return String((e && (e.description || e.message)) || e);
}

main().catch((e) => {
  process.stderr.write(`sensor: ${describe(e)}\n`);
  process.exit(1);
});
