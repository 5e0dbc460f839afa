// A pusher-js client driven by the tests: JSON commands on stdin, JSON events on stdout.
//
// Commands: {"op": "connect", "key", "options"}, {"op": "subscribe", "channel"},
// {"op": "unsubscribe", "channel"}, {"op": "bind", "channel", "event"},
// {"op": "trigger", "channel", "event", "data"},
// {"op": "signin"}, {"op": "disconnect"}, {"op": "exit"}.
// Events: {"type": "state"|"connected"|"error"|"message"|"subscribed"|"subscription_error"|
// "event"|"bound_event"|"member_added"|"member_removed"|"triggered"|"signed_in"|"user_event",
// ...}.
'use strict';

const readline = require('readline');
// The Node build of pusher-js includes encrypted-channel support (tweetnacl).
const Pusher = require('pusher-js');

let pusher = null;

function emit(message) {
  process.stdout.write(JSON.stringify(message) + '\n');
}

function connect(command) {
  pusher = new Pusher(command.key, command.options);
  const connection = pusher.connection;
  connection.bind('state_change', (states) =>
    emit({ type: 'state', previous: states.previous, current: states.current }),
  );
  connection.bind('connected', () =>
    emit({ type: 'connected', socket_id: connection.socket_id }),
  );
  connection.bind('error', (error) => emit({ type: 'error', error: error }));
  connection.bind('message', (message) =>
    emit({ type: 'message', event: message.event, channel: message.channel || null }),
  );
  pusher.user.bind_global((event, data) => emit({ type: 'user_event', event, data }));
}

function subscribe(name) {
  const channel = pusher.subscribe(name);
  channel.bind('pusher:subscription_succeeded', (data) => {
    const members = channel.members
      ? { count: channel.members.count, me: channel.members.me, ids: Object.keys(channel.members.members) }
      : null;
    emit({ type: 'subscribed', channel: name, members });
  });
  channel.bind('pusher:subscription_error', (error) =>
    emit({ type: 'subscription_error', channel: name, error }),
  );
  channel.bind('pusher:member_added', (member) =>
    emit({ type: 'member_added', channel: name, id: member.id, info: member.info }),
  );
  channel.bind('pusher:member_removed', (member) =>
    emit({ type: 'member_removed', channel: name, id: member.id }),
  );
  channel.bind_global((event, data) => {
    if (event.startsWith('pusher:') || event.startsWith('pusher_internal:')) return;
    emit({ type: 'event', channel: name, event, data });
  });
}

const handlers = {
  connect,
  subscribe: (command) => subscribe(command.channel),
  unsubscribe: (command) => pusher.unsubscribe(command.channel),
  // bind() callbacks get the event's metadata (user_id on presence client events).
  bind: (command) =>
    pusher.channel(command.channel).bind(command.event, (data, metadata) =>
      emit({
        type: 'bound_event',
        channel: command.channel,
        event: command.event,
        data,
        user_id: metadata && metadata.user_id ? metadata.user_id : null,
      }),
    ),
  trigger: (command) => {
    const channel = pusher.channel(command.channel);
    emit({ type: 'triggered', ok: Boolean(channel && channel.trigger(command.event, command.data)) });
  },
  signin: () => {
    pusher.signin();
    pusher.user.signinDonePromise.then(() =>
      emit({ type: 'signed_in', user: pusher.user.user_data }),
    );
  },
  disconnect: () => pusher.disconnect(),
  exit: () => {
    if (pusher) pusher.disconnect();
    setTimeout(() => process.exit(0), 50);
  },
};

readline.createInterface({ input: process.stdin }).on('line', (line) => {
  let command;
  try {
    command = JSON.parse(line);
    handlers[command.op](command);
  } catch (error) {
    emit({ type: 'driver_error', error: String(error), line });
  }
});
process.stdin.on('end', () => handlers.exit());
