// AMQP 1.0 scenarios against a running Wharf, with rhea (npm).
//
// Usage: node rhea_scenarios.js PORT USER PASSWORD
// Prints `ok <scenario>` for each passing scenario; exits non-zero at the first failure.
'use strict';
const rhea = require('rhea');
const assert = require('assert');
const crypto = require('crypto');

const [port, user, password] = process.argv.slice(2).map((v, i) => (i === 0 ? Number(v) : v));
const run = crypto.randomBytes(4).toString('hex');
const name = (base) => `${base}-${run}`;

// Fail, rather than hang, when what a scenario waits for does not happen in time.
function within(what, promise, ms = 15000) {
  let timer;
  const late = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
  });
  return Promise.race([promise, late]).finally(() => clearTimeout(timer));
}

function connect(options = {}) {
  return within('the connection to open', new Promise((resolve, reject) => {
    const c = rhea.create_container({ id: `rhea-${run}-${Math.random()}` });
    const conn = c.connect({ host: '127.0.0.1', port, reconnect: false, ...options });
    conn.once('connection_open', () => resolve(conn));
    conn.once('connection_error', (ctx) => reject(new Error(`connection error: ${JSON.stringify(ctx.connection.error)}`)));
    conn.once('disconnected', (ctx) => reject(new Error(`disconnected: ${ctx.error || ''}`)));
  }));
}

function opened(link) {
  return within(`link ${link.name} to open`, new Promise((resolve, reject) => {
    link.once(link.is_sender() ? 'sendable' : 'receiver_open', () => resolve(link));
    link.once(link.is_sender() ? 'sender_error' : 'receiver_error', (ctx) => reject(link.error || ctx));
    if (link.is_sender()) link.once('sender_open', () => link.sendable() && resolve(link));
  }));
}

// Send and wait for the outcome; resolves with the outcome name.
function send(sender, message) {
  return within('the outcome of a send', new Promise((resolve) => {
    const delivery = sender.send(message);
    const done = (ctx) => {
      if (ctx.delivery !== delivery) return;
      sender.removeListener('accepted', onA);
      sender.removeListener('rejected', onR);
      sender.removeListener('released', onRel);
      sender.removeListener('modified', onM);
      resolve(ctx.__outcome);
    };
    const onA = (ctx) => { ctx.__outcome = 'accepted'; done(ctx); };
    const onR = (ctx) => { ctx.__outcome = 'rejected'; done(ctx); };
    const onRel = (ctx) => { ctx.__outcome = 'released'; done(ctx); };
    const onM = (ctx) => { ctx.__outcome = 'modified'; done(ctx); };
    sender.on('accepted', onA);
    sender.on('rejected', onR);
    sender.on('released', onRel);
    sender.on('modified', onM);
  }));
}

// Collect `n` messages from a receiver (auto-accept off; returns contexts).
function take(receiver, n, timeoutMs = 15000) {
  return new Promise((resolve, reject) => {
    const got = [];
    const timer = setTimeout(() => reject(new Error(`got ${got.length} of ${n}`)), timeoutMs);
    const on = (ctx) => {
      got.push(ctx);
      if (got.length === n) {
        clearTimeout(timer);
        receiver.removeListener('message', on);
        resolve(got);
      }
    };
    receiver.on('message', on);
  });
}

async function sendReceiveAndProperties() {
  const conn = await connect();
  const q = name('rq');
  const sender = await opened(conn.open_sender(q));
  const message = {
    message_id: 'm-1', subject: 'subj', reply_to: 'back', correlation_id: 'corr', content_type: 'text/plain',
    group_id: 'g', durable: true, priority: 5, ttl: 60000,
    application_properties: { s: 'x', n: 42, b: true }, message_annotations: { 'x-opt-k': 'v' }, body: 'hello',
  };
  assert.strictEqual(await send(sender, message), 'accepted');
  const receiver = conn.open_receiver({ source: q, autoaccept: false, credit_window: 10 });
  const [ctx] = await take(receiver, 1);
  const m = ctx.message;
  for (const k of ['message_id', 'subject', 'reply_to', 'correlation_id', 'content_type', 'group_id', 'durable', 'priority', 'ttl', 'body']) {
    assert.deepStrictEqual(m[k], message[k], k);
  }
  assert.deepStrictEqual(m.application_properties, message.application_properties);
  assert.deepStrictEqual(m.message_annotations, message.message_annotations);
  ctx.delivery.accept();
  conn.close();
  console.log('ok send-receive with properties');
}

async function requestResponse() {
  const server = await connect();
  const client = await connect();
  const requests = name('rreq');
  const worker = server.open_receiver({ source: requests, autoaccept: false, credit_window: 10 });
  await opened(worker);
  const relay = await opened(server.open_sender({ target: {} })); // anonymous relay
  worker.on('message', async (ctx) => {
    ctx.delivery.accept();
    await send(relay, { to: ctx.message.reply_to, correlation_id: ctx.message.correlation_id, body: `re: ${ctx.message.body}` });
  });
  const replies = client.open_receiver({ source: { dynamic: true }, credit_window: 10 });
  await opened(replies);
  const replyTo = replies.source.address;
  assert.ok(replyTo && replyTo.startsWith('tmp.'), replyTo);
  const ask = await opened(client.open_sender(requests));
  const got = take(replies, 2);
  await send(ask, { reply_to: replyTo, correlation_id: 'a', body: 'one' });
  await send(ask, { reply_to: replyTo, correlation_id: 'b', body: 'two' });
  const answers = (await got).map((c) => [c.message.correlation_id, c.message.body]);
  assert.deepStrictEqual(answers, [['a', 're: one'], ['b', 're: two']]);
  server.close();
  client.close();
  console.log('ok dynamic reply-to and anonymous relay');
}

async function drain() {
  const conn = await connect();
  const q = name('rdrain');
  const sender = await opened(conn.open_sender(q));
  for (let i = 0; i < 2; i++) assert.strictEqual(await send(sender, { body: i }), 'accepted');
  const receiver = conn.open_receiver({ source: q, credit_window: 0, autoaccept: true });
  await opened(receiver);
  const messages = [];
  receiver.on('message', (ctx) => messages.push(ctx.message.body));
  const drained = within('the drain to complete', new Promise((resolve) => receiver.once('receiver_drained', resolve)));
  receiver.drain = true;
  receiver.add_credit(10);
  await drained;
  assert.deepStrictEqual(messages, [0, 1], 'messages sent before the drain completed');
  assert.strictEqual(receiver.credit, 0);
  // Empty queue: the drain completes with nothing.
  const again = within('the empty drain to complete', new Promise((resolve) => receiver.once('receiver_drained', resolve)));
  receiver.drain = true;
  receiver.add_credit(5);
  await again;
  assert.deepStrictEqual(messages, [0, 1]);
  conn.close();
  console.log('ok drain (2 waiting, then empty)');
}

async function outcomes() {
  const conn = await connect();
  const q = name('rout');
  const sender = await opened(conn.open_sender(q));
  for (const body of ['A', 'B']) assert.strictEqual(await send(sender, { body }), 'accepted');
  const receiver = conn.open_receiver({ source: q, credit_window: 0, autoaccept: false });
  await opened(receiver);
  const next = async () => { const p = take(receiver, 1); receiver.add_credit(1); return (await p)[0]; };
  let ctx = await next();
  assert.strictEqual(ctx.message.body, 'A');
  ctx.delivery.modified({ delivery_failed: true });
  ctx = await next();
  assert.deepStrictEqual([ctx.message.body, ctx.message.delivery_count], ['A', 1]);
  ctx.delivery.release();
  ctx = await next();
  assert.strictEqual(ctx.message.body, 'A');
  ctx.delivery.reject({ condition: 'app:bad', description: 'no thanks' });
  ctx = await next();
  assert.strictEqual(ctx.message.body, 'B');
  ctx.delivery.accept();
  conn.close();
  console.log('ok outcomes (modified, released, rejected, accepted)');
}

async function largeMessage() {
  const conn = await connect({ max_frame_size: 4096 });
  const q = name('rlarge');
  const body = Buffer.alloc(1024 * 1024 + 7, 0x5a);
  body[12345] = 1;
  const sender = await opened(conn.open_sender(q));
  assert.strictEqual(await send(sender, { body: rhea.message.data_section(body) }), 'accepted');
  const receiver = conn.open_receiver({ source: q, credit_window: 1 });
  const [ctx] = await take(receiver, 1, 30000);
  assert.ok(Buffer.compare(ctx.message.body.content, body) === 0, 'body differs');
  conn.close();
  console.log('ok 1 MiB message with max-frame-size 4096');
}

async function sasl() {
  const conn = await connect({ username: user, password });
  conn.close();
  let refused = false;
  try {
    await connect({ username: user, password: 'wrong' });
  } catch (e) {
    refused = true;
  }
  assert.ok(refused, 'bad password accepted');
  console.log('ok SASL PLAIN good and bad password');
}

async function unknownTerminus() {
  const conn = await connect();
  const receiver = conn.open_receiver({ source: 'bad address!' });
  const error = await within('the link to be refused', new Promise((resolve) => receiver.once('receiver_error', () => resolve(receiver.error))));
  assert.strictEqual(error.condition, 'amqp:invalid-field', JSON.stringify(error));
  conn.close();
  console.log('ok invalid address refused with an error condition');
}

(async () => {
  for (const scenario of [sendReceiveAndProperties, requestResponse, drain, outcomes, largeMessage, sasl, unknownTerminus]) {
    await scenario();
  }
  console.log('all passed');
  process.exit(0);
})().catch((e) => {
  console.error(e);
  process.exit(1);
});
