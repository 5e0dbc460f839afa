// Pusher's Node server SDK (npm "pusher") making one call, for the tests.
// Usage: node pusher_server_sdk.cjs '<JSON {"settings", "call", "args"}>'; prints the answer.
'use strict';

const Pusher = require('pusher');

async function main() {
  const { settings, call, args } = JSON.parse(process.argv[2]);
  const pusher = new Pusher(settings);
  const response = await pusher[call](...args);
  const text = await response.text();
  process.stdout.write(JSON.stringify({ status: response.status, body: text ? JSON.parse(text) : null }) + '\n');
}

main().catch((error) => {
  process.stdout.write(JSON.stringify({ error: String(error), status: error.status || null, body: error.body || null }) + '\n');
  process.exitCode = 1;
});
