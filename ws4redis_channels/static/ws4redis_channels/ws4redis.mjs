// ES module entry point of the ws4redis_channels client; see ws4redis.js for the API.
//
//   import WS4Redis from "/static/ws4redis_channels/ws4redis.mjs";
//   import { WS4Redis } from "/static/ws4redis_channels/ws4redis.mjs";
//
// ws4redis.js is a classic script that also runs as a module: importing it
// defines globalThis.WS4Redis, which is exported from here.
import "./ws4redis.js";

const WS4Redis = globalThis.WS4Redis;

export { WS4Redis };
export default WS4Redis;
