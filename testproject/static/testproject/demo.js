// Helpers shared by the demo pages: the server's configuration, a status line, log lines.
// The websocket work itself is ws4redis.js; these only display what it reports.
(function () {
  "use strict";

  var config = JSON.parse(document.getElementById("demo-config").textContent);

  function describeClose(info) {
    var reason = info.reason || config.closeReasons[info.code] || "connection lost";
    return "code " + info.code + ": " + reason;
  }

  // Keep `element` showing the client's state, why it last closed, how many attempts it
  // made to reconnect, and the round trip of the last heartbeat.
  function showStatus(client, element) {
    var last = null;
    var attempts = 0;  // connection attempts since the socket was last open
    var rtt = null;
    function render() {
      var state = client.state;
      var text = state;
      if (state === "open") {
        text = "connected";
        if (rtt !== null) {
          text += " · heartbeat round trip " + rtt + " ms";
        }
      } else if (state === "connecting") {
        text = attempts > 1 ? "reconnecting… (attempt " + attempts + ")" : "connecting…";
      } else if (state === "reconnecting" && last) {
        text = "disconnected (" + describeClose(last) + "); attempt " + (attempts + 1) +
               " in " + (last.delay / 1000).toFixed(1) + " s";
      } else if (state === "closed" && last) {
        text = "closed (" + describeClose(last) + ")";
        if (config.noRetry.indexOf(last.code) !== -1) {
          text += "; not retrying: the server would refuse the same request again";
        }
      }
      element.textContent = text;
      element.dataset.state = state;
    }
    client.on("close", function (info) { last = info; render(); });
    client.on("state", function (next) {
      if (next === "connecting") {
        attempts += 1;
      } else if (next === "open") {
        attempts = 0;
      }
      render();
    });
    client.on("heartbeat", function (ms) {
      rtt = ms === null ? rtt : Math.round(ms);
      element.dataset.heartbeat = String(rtt);
      render();
    });
    if (client.state === "connecting") {
      attempts = 1;
    }
    render();
  }

  // Append a line to a list: a time stamp, then the given parts ([className, text] pairs).
  function addLine(list, parts) {
    var item = document.createElement("li");
    var time = document.createElement("time");
    time.textContent = new Date().toLocaleTimeString();
    item.appendChild(time);
    parts.forEach(function (part) {
      var span = document.createElement("span");
      span.className = part[0];
      span.textContent = part[1];
      item.appendChild(span);
    });
    list.appendChild(item);
    list.scrollTop = list.scrollHeight;
    return item;
  }

  // Text of a received message: binary frames are described, with their first bytes in hex
  // when they arrive as an ArrayBuffer.
  function messageText(data) {
    if (typeof data === "string") {
      return data;
    }
    if (data.byteLength !== undefined) {
      var bytes = Array.prototype.slice.call(new Uint8Array(data, 0, Math.min(16, data.byteLength)));
      var hex = bytes.map(function (b) { return (b < 16 ? "0" : "") + b.toString(16); }).join(" ");
      return "[binary frame, " + data.byteLength + " bytes: " + hex + (data.byteLength > 16 ? " …" : "") + "]";
    }
    return "[binary frame, " + data.size + " bytes]";
  }

  // POST a form with fetch and return the parsed JSON answer (or the error text).
  function postForm(form) {
    return fetch(form.action, {
      method: "POST",
      body: new FormData(form),
      headers: { "Accept": "application/json" },
      credentials: "same-origin"
    }).then(function (response) {
      return response.ok ? response.json() : response.text().then(function (text) {
        throw new Error(text);
      });
    });
  }

  window.Demo = {
    config: config,
    describeClose: describeClose,
    showStatus: showStatus,
    addLine: addLine,
    messageText: messageText,
    postForm: postForm
  };
})();
