/*!
 * ws4redis.js: the browser client of ws4redis_channels. No dependencies.
 *
 * Loading
 *   Classic script:  <script src="{% static 'ws4redis_channels/ws4redis.js' %}"></script>
 *                    defines the global function WS4Redis.
 *   ES module:       import WS4Redis from "/static/ws4redis_channels/ws4redis.mjs";
 *                    (also `import { WS4Redis } from ...`). ws4redis.mjs loads this
 *                    file, so the global is defined in that case too.
 *   CommonJS:        const WS4Redis = require(".../ws4redis.js");
 *
 * Creating a client (with or without `new`; it connects at once)
 *   var ws = WS4Redis({
 *     uri: "{{ WEBSOCKET_URI }}foobar?subscribe-broadcast&publish-broadcast",
 *     heartbeat_msg: {{ WS4REDIS_HEARTBEAT }},   // a JS literal from the context processor
 *     receive_message: function (data) { ... }
 *   });
 *   `uri` may also be a path ("/ws/foobar?subscribe-broadcast"): ws:// or wss:// and the
 *   host are then taken from the page.
 *
 * Options (times in milliseconds)
 *   uri                  required; ws://, wss://, http(s):// (converted) or a path
 *   heartbeat_msg        null      string sent every heartbeat_interval; must equal the
 *                                  server's WS4REDIS_HEARTBEAT. Its echo is never delivered
 *                                  as a message. null: no heartbeat, no stall detection.
 *   heartbeat_interval   5000      time between two heartbeats
 *   heartbeat_timeout    10000     a heartbeat not followed by any frame from the server
 *                                  within this time marks the connection dead: it is
 *                                  dropped and a reconnect is scheduled
 *   connect_timeout      10000     an opening handshake that takes longer is abandoned
 *   reconnect_delay      1000      backoff base: attempt n (from 0) waits a random time in
 *   reconnect_max_delay  30000     [0, min(reconnect_max_delay, reconnect_delay * 2^n)]
 *   reconnect_reset_after 5000     a connection that stayed open this long resets n to 0
 *   max_buffered         100       send() calls kept while not connected (then refused)
 *   positions            true      ask the server for message positions (the `positions`
 *                                  flag) and resume from them after each reconnect: what
 *                                  the socket missed arrives once, in order, or
 *                                  `recovered` says it cannot; a message older than one
 *                                  the page has is never delivered. false: plain frames.
 *   keep_positions       false     also keep the positions in sessionStorage, so that a
 *                                  reload of the page resumes where it was
 *   no_retry_codes       WS4Redis.NO_RETRY   close codes after which it stops for good
 *   protocols            undefined passed to new WebSocket(uri, protocols)
 *   binary_type          "blob"    WebSocket.binaryType: "blob" or "arraybuffer"
 *   debug                false     log to the console
 *   connecting()                   called before each connection attempt
 *   connected()                    called when a connection opens
 *   receive_message(data, info)    called for each message (string, Blob or ArrayBuffer);
 *                                  info = {channel, position} with positions, else null
 *   disconnected(info)             called when a connection ends (info: see "close")
 *
 * Events: ws.on(type, listener) and ws.off(type, listener); both return the client.
 *   "open"       ()                a connection opened (buffered sends are already out)
 *   "message"    (data, event, info) a message from the server (info: see receive_message)
 *   "recovered"  (ok, channels)    after each reconnect (and a first connect that resumed
 *                                  from the page's ws4redis_positions tag): ok is true if
 *                                  every message missed meanwhile was delivered, false if
 *                                  some could not be (reload the page's state);
 *                                  channels = {label: "recovered" | "lost" | "new"}
 *   "close"      (info)            a connection ended, or an attempt failed:
 *                                  info = {code, reason, wasClean, retry, delay, attempt}
 *                                  retry: a reconnect is scheduled in `delay` ms
 *   "state"      (state, previous) the state changed
 *   "heartbeat"  (rtt)             the server answered a heartbeat after rtt ms
 *
 * States (ws.state): "connecting" (an attempt is under way), "open",
 *   "reconnecting" (waiting `delay` before the next attempt), "closed" (for good: after
 *   ws.close() or a close code in no_retry_codes).
 *
 * Methods and properties
 *   ws.send(data)          send now if open, else buffer (max_buffered); returns true if
 *                          sent or buffered, false if refused (buffer full, or closed)
 *   ws.close(code, reason) close and never reconnect (code: 1000 or 3000-4999)
 *   ws.state, ws.url, ws.connected (boolean), ws.buffered (number of buffered sends)
 * Names of django-websocket-redis's client
 *   send_message(data) = send(data); close(); get_state() (the socket's readyState, 0-3);
 *   is_connecting(), is_connected(), is_closing(), is_closed()
 *
 * Static: WS4Redis.NO_RETRY (close codes that mean "the same request would be refused
 *   again": 4400 bad facility, 4401 login required, 4403 may not publish, 4404 no such
 *   endpoint, 4413 message too big, 4428 session required; frozen).
 *
 * First connect: a <meta name="ws4redis-positions"> rendered by {% ws4redis_positions %}
 * for this socket's path gives the positions of the page's render time; the client
 * resumes from them, so nothing published between render and open is missed.
 *
 * A handshake the server refuses before accepting it (origin check, PermissionDenied)
 * reaches the browser as code 1006, like a network error: it is retried with backoff.
 */
(function (root, factory) {
  "use strict";
  var WS4Redis = factory(root);
  if (typeof module === "object" && module && module.exports) {
    module.exports = WS4Redis;
  } else {
    root.WS4Redis = WS4Redis;
  }
})(typeof globalThis !== "undefined" ? globalThis : typeof self !== "undefined" ? self : this, function (root) {
  "use strict";

  var OPEN = 1;
  var NO_RETRY = Object.freeze([4400, 4401, 4403, 4404, 4413, 4428]);
  var EVENTS = ["open", "message", "close", "state", "heartbeat", "recovered"];
  var STORAGE_PREFIX = "ws4redis-positions:";

  var DEFAULTS = {
    uri: null,
    heartbeat_msg: null,
    heartbeat_interval: 5000,
    heartbeat_timeout: 10000,
    connect_timeout: 10000,
    reconnect_delay: 1000,
    reconnect_max_delay: 30000,
    reconnect_reset_after: 5000,
    max_buffered: 100,
    positions: true,
    keep_positions: false,
    no_retry_codes: NO_RETRY,
    protocols: undefined,
    binary_type: null,
    debug: false,
    connecting: null,
    connected: null,
    receive_message: null,
    disconnected: null
  };

  function now() {
    return Date.now();
  }

  function report(error) {
    // A failing listener must not break the client; still show the error.
    if (typeof root.reportError === "function") {
      root.reportError(error);
    } else {
      setTimeout(function () { throw error; }, 0);
    }
  }

  function absolute(uri) {
    var text = String(uri);
    var location = root.location;
    if (text.charAt(0) === "/" && text.charAt(1) !== "/" && location) {
      text = (location.protocol === "https:" ? "wss://" : "ws://") + location.host + text;
    } else if (/^https?:\/\//i.test(text)) {
      text = text.replace(/^http/i, "ws");
    }
    var parsed;
    try {
      parsed = new URL(text);
    } catch (err) {
      throw new TypeError("WS4Redis: uri " + JSON.stringify(String(uri)) + " is not a URL");
    }
    if (parsed.protocol !== "ws:" && parsed.protocol !== "wss:") {
      throw new TypeError("WS4Redis: uri must start with ws://, wss://, http(s):// or /, got " +
                          JSON.stringify(String(uri)));
    }
    return text;
  }

  // Positions are "<epoch>:<offset>"; epochs never go down on a channel.
  function parsePosition(text) {
    var match = /^(\d+):(\d+)$/.exec(text || "");
    return match ? [Number(match[1]), Number(match[2])] : null;
  }

  function newer(a, b) {
    // Is position a after position b (either may be null)?
    var pa = parsePosition(a);
    var pb = parsePosition(b);
    if (!pa) { return false; }
    if (!pb) { return true; }
    return pa[0] > pb[0] || (pa[0] === pb[0] && pa[1] > pb[1]);
  }

  function splitHeader(data) {
    // "<header>\n<payload>" as a string or an ArrayBuffer: [header, payload] or null.
    if (typeof data === "string") {
      var end = data.indexOf("\n");
      return end === -1 ? [data, ""] : [data.slice(0, end), data.slice(end + 1)];
    }
    var bytes = new Uint8Array(data);
    var stop = bytes.indexOf(10);
    if (stop === -1) { return null; }
    return [String.fromCharCode.apply(null, bytes.subarray(0, stop)), data.slice(stop + 1)];
  }

  function withQuery(uri, extra) {
    if (!extra.length) { return uri; }
    var hash = uri.indexOf("#");
    var base = hash === -1 ? uri : uri.slice(0, hash);
    return base + (base.indexOf("?") === -1 ? "?" : "&") + extra.join("&");
  }

  function pagePositions(uri) {
    // The render-time positions of {% ws4redis_positions %} for this socket's path.
    var doc = root.document;
    if (!doc || !doc.querySelectorAll) { return {}; }
    var path;
    try { path = new URL(uri).pathname; } catch (err) { return {}; }
    var found = {};
    var metas = doc.querySelectorAll('meta[name="ws4redis-positions"]');
    for (var i = 0; i < metas.length; i++) {
      if (metas[i].getAttribute("data-path") === path) {
        (metas[i].getAttribute("content") || "").split(/\s+/).forEach(function (item) {
          var cut = item.lastIndexOf(":", item.lastIndexOf(":") - 1);
          if (cut > 0 && parsePosition(item.slice(cut + 1))) {
            found[item.slice(0, cut)] = item.slice(cut + 1);
          }
        });
      }
    }
    return found;
  }

  function backoff(attempt, base, max) {
    // Full jitter: uniform in [0, min(max, base * 2^attempt)].
    var cap = Math.min(max, base * Math.pow(2, attempt));
    return Math.floor(Math.random() * cap);
  }

  function WS4Redis(options) {
    if (!(this instanceof WS4Redis)) {
      return new WS4Redis(options);
    }
    var opts = {};
    var key;
    for (key in DEFAULTS) {
      opts[key] = DEFAULTS[key];
    }
    for (key in options || {}) {
      if (options[key] !== undefined) {
        opts[key] = options[key];
      }
    }
    if (!opts.uri) {
      throw new TypeError("WS4Redis: options.uri is required, e.g. \"/ws/foobar?subscribe-broadcast\"");
    }
    var uri = absolute(opts.uri);
    var self = this;
    var listeners = {};
    EVENTS.forEach(function (type) { listeners[type] = []; });

    var socket = null;           // the current WebSocket, if any
    var state = "connecting";
    var stopped = false;         // close() was called or a no-retry code arrived
    var attempt = 0;             // failed attempts since the last stable connection
    var openedAt = 0;            // when the current socket opened (0: not open)
    var everOpened = false;
    var retryTimer = null;
    var connectTimer = null;
    var beatTimer = null;
    var answerTimer = null;
    var beatTimes = [];          // send times of unanswered heartbeats
    var queue = [];              // sends made while not connected
    var positions = {};          // label -> last position this page has, per channel
    var positioned = false;      // the current connection sends positions
    var stateFloor = {};         // label -> position the last state frame reported
    var expectState = false;     // the next frame is the server's state frame
    var storageKey = STORAGE_PREFIX + uri;
    var storage = null;
    if (opts.keep_positions) {
      try {
        storage = root.sessionStorage;
        positions = JSON.parse(storage.getItem(storageKey) || "{}") || {};
      } catch (err) {
        storage = null;
        positions = {};
      }
    }
    if (opts.positions && !Object.keys(positions).length) {
      positions = pagePositions(uri);
    }

    function log() {
      if (opts.debug && root.console) {
        var args = Array.prototype.slice.call(arguments);
        args.unshift("[ws4redis]");
        root.console.debug.apply(root.console, args);
      }
    }

    function emit(type) {
      var args = Array.prototype.slice.call(arguments, 1);
      listeners[type].slice().forEach(function (fn) {
        try {
          fn.apply(self, args);
        } catch (err) {
          report(err);
        }
      });
    }

    function call(callback) {
      if (typeof callback === "function") {
        try {
          callback.apply(self, Array.prototype.slice.call(arguments, 1));
        } catch (err) {
          report(err);
        }
      }
    }

    function setState(next) {
      if (next !== state) {
        var previous = state;
        state = next;
        log("state", previous, "->", next);
        emit("state", next, previous);
      }
    }

    function clearTimers() {
      clearTimeout(retryTimer);
      clearTimeout(connectTimer);
      clearInterval(beatTimer);
      clearTimeout(answerTimer);
      retryTimer = connectTimer = beatTimer = answerTimer = null;
      beatTimes = [];
    }

    function detach() {
      // Forget the current socket: its late events must not reach the page.
      var ws = socket;
      socket = null;
      if (ws) {
        ws.onopen = ws.onmessage = ws.onclose = ws.onerror = null;
      }
      return ws;
    }

    function connect() {
      retryTimer = null;
      if (stopped) {
        return;
      }
      setState("connecting");
      call(opts.connecting);
      if (stopped) {
        return;  // the callback closed the client
      }
      var target = uri;
      if (opts.positions) {
        var extra = ["positions"];
        Object.keys(positions).forEach(function (label) {
          extra.push("since=" + encodeURIComponent(label + ":" + positions[label]));
        });
        target = withQuery(uri, extra);
      }
      log("connecting to", target, "attempt", attempt);
      var ws;
      try {
        ws = opts.protocols === undefined ? new WebSocket(target) : new WebSocket(target, opts.protocols);
      } catch (err) {
        lost({ code: 1006, reason: String((err && err.message) || err), wasClean: false });
        return;
      }
      if (opts.positions) {
        ws.binaryType = "arraybuffer";  // binary frames carry a header too
      } else if (opts.binary_type) {
        ws.binaryType = opts.binary_type;
      }
      socket = ws;
      ws.onopen = function () { if (ws === socket) { opened(); } };
      ws.onmessage = function (event) { if (ws === socket) { received(event); } };
      ws.onclose = function (event) {
        if (ws === socket) {
          lost({ code: event.code, reason: event.reason, wasClean: event.wasClean });
        }
      };
      ws.onerror = function () { /* a close event follows */ };
      connectTimer = setTimeout(function () {
        if (ws === socket && ws.readyState !== OPEN) {
          abandon("no answer to the opening handshake within " + opts.connect_timeout + " ms");
        }
      }, opts.connect_timeout);
    }

    function opened() {
      clearTimeout(connectTimer);
      connectTimer = null;
      openedAt = now();
      positioned = false;
      expectState = !!opts.positions;
      everOpened = true;
      log("open");
      // Buffered sends go out first, so that anything the listeners send follows them.
      while (queue.length && socket && socket.readyState === OPEN) {
        transmit(queue.shift());
      }
      if (opts.heartbeat_msg !== null && opts.heartbeat_msg !== undefined) {
        beatTimer = setInterval(beat, opts.heartbeat_interval);
      }
      setState("open");
      emit("open");
      call(opts.connected);
    }

    function transmit(data) {
      socket.send(data);
    }

    function savePositions() {
      if (storage) {
        try {
          storage.setItem(storageKey, JSON.stringify(positions));
        } catch (err) { /* full or denied: positions stay in memory */ }
      }
    }

    function onState(text) {
      // "p <label> <position> <status>" lines: where each channel stands after the join.
      var channels = {};
      var ok = true;
      var resumed = false;
      text.split("\n").forEach(function (line) {
        var parts = line.split(" ");
        if (parts.length !== 4 || parts[0] !== "p") { return; }
        var label = parts[1];
        channels[label] = parts[3];
        if (parts[3] !== "new") { resumed = true; }
        if (parts[3] !== "recovered") { ok = false; }
        // The replay up to this position follows; resume from here at the latest.
        if (newer(parts[2], positions[label])) {
          stateFloor[label] = parts[2];
        }
      });
      savePositions();
      if (resumed) {
        log("recovered", ok, channels);
        emit("recovered", ok, channels);
      }
    }

    function beat() {
      if (!socket || socket.readyState !== OPEN) {
        return;
      }
      beatTimes.push(now());
      if (answerTimer === null) {
        answerTimer = setTimeout(function () {
          answerTimer = null;
          abandon("no answer to the heartbeat within " + opts.heartbeat_timeout + " ms");
        }, opts.heartbeat_timeout);
      }
      socket.send(opts.heartbeat_msg);
    }

    function received(event) {
      var data = event.data;
      // Any frame shows that the connection is alive.
      clearTimeout(answerTimer);
      answerTimer = null;
      if (opts.heartbeat_msg !== null && data === opts.heartbeat_msg) {
        var sent = beatTimes.shift();
        emit("heartbeat", sent === undefined ? null : now() - sent);
        return;
      }
      var info = null;
      if (expectState) {
        expectState = false;
        if (typeof data === "string" && data.slice(0, 2) === "p ") {
          positioned = true;
          stateFloor = {};
          onState(data);
          return;
        }
        log("the server sends no positions; plain frames");
      }
      if (positioned) {
        var parts = splitHeader(data);
        var head = parts ? parts[0].split(" ") : [];
        if (head.length === 3 && head[0] === "m") {
          var label = head[1];
          var position = head[2] === "-" ? null : head[2];
          data = parts[1];
          if (position !== null) {
            if (!newer(position, positions[label])) {
              log("dropped a message the page already has", label, position);
              return;
            }
            positions[label] = position;
            if (stateFloor[label] && !newer(stateFloor[label], position)) {
              delete stateFloor[label];
            }
            savePositions();
          }
          info = { channel: label, position: position };
        } else if (head.length && head[0] === "p") {
          onState(data);  // a rejoin after the server's own reconnect to Redis
          return;
        }
        if (typeof data !== "string" && opts.binary_type !== "arraybuffer") {
          data = new Blob([data]);
        }
      }
      emit("message", data, event, info);
      call(opts.receive_message, data, info);
    }

    function abandon(reason) {
      // The connection is dead or stuck: do not wait for the browser's close
      // handshake (it can take a minute on a silent peer).
      log("abandoning the connection:", reason);
      var ws = socket;
      if (ws) {
        try {
          ws.close();
        } catch (err) { /* already closing */ }
      }
      lost({ code: 1006, reason: reason, wasClean: false });
    }

    function lost(info) {
      detach();
      // Resume from where the page is, or past what the server said it had.
      Object.keys(stateFloor).forEach(function (label) {
        if (newer(stateFloor[label], positions[label])) {
          positions[label] = stateFloor[label];
        }
      });
      stateFloor = {};
      savePositions();
      clearTimers();
      if (openedAt && now() - openedAt >= opts.reconnect_reset_after) {
        attempt = 0;
      }
      openedAt = 0;
      if (stopped) {
        return;
      }
      info.attempt = attempt;
      if (opts.no_retry_codes.indexOf(info.code) !== -1) {
        stopped = true;
        queue = [];
        info.retry = false;
        info.delay = null;
        log("closed with", info.code, "(no retry):", info.reason);
        setState("closed");
      } else {
        info.retry = true;
        info.delay = backoff(attempt, opts.reconnect_delay, opts.reconnect_max_delay);
        attempt += 1;
        log("closed with", info.code, info.reason, "- reconnecting in", info.delay, "ms");
        retryTimer = setTimeout(connect, info.delay);
        setState("reconnecting");
      }
      emit("close", info);
      call(opts.disconnected, info);
    }

    // -- public API -----------------------------------------------------------------

    this.on = function (type, listener) {
      if (!listeners[type]) {
        throw new TypeError("WS4Redis: unknown event " + JSON.stringify(type) +
                            "; use one of " + EVENTS.join(", "));
      }
      if (typeof listener !== "function") {
        throw new TypeError("WS4Redis: a listener must be a function");
      }
      listeners[type].push(listener);
      return self;
    };

    this.off = function (type, listener) {
      var list = listeners[type] || [];
      var index = list.indexOf(listener);
      if (index !== -1) {
        list.splice(index, 1);
      }
      return self;
    };

    this.send = function (data) {
      if (stopped) {
        return false;
      }
      if (state === "open" && socket && socket.readyState === OPEN) {
        transmit(data);
        return true;
      }
      if (queue.length >= opts.max_buffered) {
        log("send buffer full; message refused");
        return false;
      }
      queue.push(data);
      return true;
    };

    this.close = function (code, reason) {
      if (code !== undefined && code !== 1000 && !(code >= 3000 && code <= 4999)) {
        throw new RangeError("WS4Redis: close code must be 1000 or 3000-4999, got " + code);
      }
      if (stopped) {
        return;
      }
      stopped = true;
      queue = [];
      var ws = detach();
      clearTimers();
      openedAt = 0;
      if (ws && ws.readyState <= OPEN) {
        ws.close(code === undefined ? 1000 : code, reason === undefined ? "" : reason);
      }
      setState("closed");
      var info = { code: code === undefined ? 1000 : code, reason: reason || "", wasClean: true,
                   retry: false, delay: null, attempt: attempt };
      emit("close", info);
      call(opts.disconnected, info);
    };

    this.send_message = this.send;

    this.get_state = function () {
      return socket ? socket.readyState : 3;
    };
    this.is_connecting = function () { return !!socket && socket.readyState === 0; };
    this.is_connected = function () { return state === "open"; };
    this.is_closing = function () { return !!socket && socket.readyState === 2; };
    this.is_closed = function () { return !socket || socket.readyState === 3; };

    Object.defineProperty(this, "state", { get: function () { return state; } });
    Object.defineProperty(this, "connected", { get: function () { return state === "open"; } });
    Object.defineProperty(this, "buffered", { get: function () { return queue.length; } });
    Object.defineProperty(this, "url", { value: uri });

    connect();
  }

  WS4Redis.NO_RETRY = NO_RETRY;
  return WS4Redis;
});
