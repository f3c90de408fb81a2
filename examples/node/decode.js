// Wire schema v1 decoding for Node.js (docs/schema.md, "Decoding rules"): a payload's bytes -> a checked
// message whose arrays are typed arrays, or an Error for anything the doc refuses. This is the part of the
// example to copy; subscriber.js is the socket loop around it.
//
//   const { decodeMessage } = require("./decode");
//   const m = decodeMessage(topicBuffer, payloadBuffer);  // throws on a message the doc refuses
//
//   node decode.js RECORDING   # every record of a --record file: one JSON line per message (tests use it)
"use strict";

const { Decoder, decodeMulti } = require("@msgpack/msgpack");

const SCHEMA_VERSION = 1;
const KINDS = ["topology", "frame", "end"];
const TRACK_STATES = ["new", "tracked", "coasting", "lost"];
const VERTEX_DTYPES = ["float32", "float16", "int16"];
const HAND_SIDES = ["left", "right"];
const MAX_COUNT = Number.MAX_SAFE_INTEGER; // counts: integers in [0, 2**53 - 1] (rule 3)
const MAX_SIDE = 2 ** 31 - 1; // width, height, vertices_every (rule 12)
const FLOAT32_MAX = 3.4028234663852886e38; // box, center lie within float32's range (rule 13)
const MAX_STREAM_ID = 256; // code points (rule 17)
const MAX_OBJECTS = 100000; // msgpack objects in one payload (rule 7)
const MAX_DEPTH = 16; // containers deep, the message map being depth 1 (rule 16)
const BODY_SHAPES = { cam: [3], cam_t: [3], joints3d: [14, 3], joints2d: [14, 2], joints_h36m: [17, 3],
  rotmat: [24, 3, 3], betas: [10] };
const HAND_SHAPES = { cam: [3], cam_t: [3], joints3d: [21, 3] };
const ITEM_SIZE = { "<f4": 4, "<f2": 2, "<i2": 2, "<i4": 4 };

const utf8 = new TextDecoder("utf-8", { fatal: true }); // invalid UTF-8 throws (rule 8)
const has = (obj, key) => Object.prototype.hasOwnProperty.call(obj, key); // never the prototype's keys

function fail(message) {
  throw new Error(message);
}

// msgpack type byte -> [bytes of its length/value field, kind] (as pipeline/wire_limits.py)
const HEADS = new Map([[0xc4, [1, "len"]], [0xc5, [2, "len"]], [0xc6, [4, "len"]], [0xc7, [1, "ext"]],
  [0xc8, [2, "ext"]], [0xc9, [4, "ext"]], [0xca, [4, "skip"]], [0xcb, [8, "skip"]], [0xcc, [1, "skip"]],
  [0xcd, [2, "skip"]], [0xce, [4, "skip"]], [0xcf, [8, "skip"]], [0xd0, [1, "skip"]], [0xd1, [2, "skip"]],
  [0xd2, [4, "skip"]], [0xd3, [8, "skip"]], [0xd4, [2, "skip"]], [0xd5, [3, "skip"]], [0xd6, [5, "skip"]],
  [0xd7, [9, "skip"]], [0xd8, [17, "skip"]], [0xd9, [1, "str"]], [0xda, [2, "str"]], [0xdb, [4, "str"]],
  [0xdc, [2, "arr"]], [0xdd, [4, "arr"]], [0xde, [2, "map"]], [0xdf, [4, "map"]]]);

function readUint(b, pos, size) {
  let v = 0;
  for (let i = 0; i < size; i++) v = v * 256 + b[pos + i];
  return v;
}

// Walk the msgpack headers without building anything (rules 7, 8, 16): at most MAX_OBJECTS objects, at most
// MAX_DEPTH deep, no container claiming more items than bytes remain, map keys strings (not "__proto__"),
// every string valid UTF-8. Memory stays bounded by the payload whatever it holds.
function checkStructure(b) {
  const n = b.length;
  let pos = 0;
  let objects = 0;
  const remaining = [1];
  const inMap = [false];
  while (remaining.length) {
    const top = remaining.length - 1;
    if (remaining[top] === 0) { remaining.pop(); inMap.pop(); continue; }
    const isKey = inMap[top] && remaining[top] % 2 === 0;
    remaining[top]--;
    if (pos >= n) fail("not a msgpack object: truncated");
    const t = b[pos++];
    if (++objects > MAX_OBJECTS) fail(`message holds more than ${MAX_OBJECTS} msgpack objects`);
    let count = 0;
    let isMap = false;
    let strLen = -1;
    let strStart = 0;
    if (t <= 0x7f || t >= 0xe0 || t === 0xc0 || t === 0xc2 || t === 0xc3) {
      // a fixed value, nothing follows
    } else if (t >= 0x80 && t <= 0x8f) {
      count = 2 * (t & 0x0f);
      isMap = true;
    } else if (t >= 0x90 && t <= 0x9f) {
      count = t & 0x0f;
    } else if (t >= 0xa0 && t <= 0xbf) {
      strLen = t & 0x1f;
      strStart = pos;
    } else if (HEADS.has(t)) {
      const [size, kind] = HEADS.get(t);
      if (kind === "skip") {
        pos += size;
      } else {
        if (pos + size > n) fail("not a msgpack object: truncated");
        const value = readUint(b, pos, size);
        pos += size;
        if (kind === "str") { strLen = value; strStart = pos; }
        else if (kind === "len") pos += value;
        else if (kind === "ext") pos += value + 1;
        else { count = kind === "map" ? 2 * value : value; isMap = kind === "map"; }
      }
    } else {
      fail(`not a msgpack object: byte 0x${t.toString(16)} at ${pos - 1}`);
    }
    if (isKey && strLen < 0) fail(`a map key is not a string (msgpack type 0x${t.toString(16)})`);
    if (strLen >= 0) {
      if (strStart + strLen > n) fail("not a msgpack object: truncated");
      const text = utf8.decode(b.subarray(strStart, strStart + strLen)); // throws on invalid UTF-8
      if (isKey && text === "__proto__") fail("a map key is '__proto__'");
      pos = strStart + strLen;
      continue;
    }
    const container = (t >= 0x80 && t <= 0x9f) || t === 0xdc || t === 0xdd || t === 0xde || t === 0xdf;
    if (!container) continue;
    if (remaining.length > MAX_DEPTH) fail(`message nests deeper than ${MAX_DEPTH}`);
    if (count > n - pos) fail(`a msgpack container claims ${count} items in ${n - pos} bytes`);
    if (count) { remaining.push(count); inMap.push(isMap); }
  }
  return objects;
}

const isMap = (x) => x !== null && typeof x === "object" && !Array.isArray(x) && !(x instanceof Uint8Array);
const isNumber = (x) => typeof x === "number";

// An integer field (rule 3): a msgpack integer or an integral float (JavaScript sees no difference), in range.
function int(obj, key, where, low = 0, high = MAX_COUNT) {
  if (!has(obj, key)) fail(`${where}: missing ${key}`);
  const v = obj[key];
  if (!isNumber(v) || !Number.isInteger(v) || v < low || v > high) fail(`${where}: ${key} = ${v} is not an integer in [${low}, ${high}]`);
  return v;
}

function finite(obj, key, where, positive = false) {
  if (!has(obj, key)) fail(`${where}: missing ${key}`);
  const v = obj[key];
  if (!isNumber(v) || !Number.isFinite(v) || (positive && !(v > 0))) fail(`${where}: ${key} must be a finite number`);
  return v;
}

function required(obj, key, where, check, what) {
  if (!has(obj, key) || !check(obj[key])) fail(`${where}: ${key} must be ${what}`);
  return obj[key];
}

function numbers(values, n, name) { // n msgpack numbers, finite, within float32's range
  if (!Array.isArray(values) || values.length !== n) fail(`${name}: expected ${n} numbers`);
  for (const v of values) {
    if (!isNumber(v) || !Number.isFinite(v) || Math.abs(v) > FLOAT32_MAX) fail(`${name}: expected ${n} finite numbers`);
  }
  return values;
}

// IEEE 754 half -> float (exact in a float32).
function halfToFloat(h) {
  const s = h & 0x8000 ? -1 : 1;
  const e = (h >> 10) & 0x1f;
  const f = h & 0x3ff;
  if (e === 0) return s * Math.pow(2, -14) * (f / 1024);
  if (e === 31) return f ? NaN : s * Infinity;
  return s * Math.pow(2, e - 15) * (1 + f / 1024);
}

// {dtype, shape, data[, scale]} of one of `dtypes` and exactly `shape` (null: any length) ->
// {dtype, shape, values: Float32Array (Int32Array for <i4)}; floats finite.
function unpackArray(obj, name, dtypes, shape) {
  if (!isMap(obj) || !has(obj, "dtype") || !has(obj, "shape") || !has(obj, "data")) fail(`${name}: expected a map with dtype, shape and data`);
  if (!dtypes.includes(obj.dtype)) fail(`${name}: dtype ${obj.dtype} is not ${dtypes.join(" or ")}`);
  if (!Array.isArray(obj.shape) || !obj.shape.every((s) => isNumber(s) && Number.isInteger(s) && s >= 0)) fail(`${name}: bad shape`);
  if (obj.shape.length !== shape.length || shape.some((s, i) => s !== null && s !== obj.shape[i])) {
    fail(`${name}: shape [${obj.shape}] does not match [${shape.map((s) => (s === null ? "N" : s))}]`);
  }
  if (!(obj.data instanceof Uint8Array)) fail(`${name}: data must be bin`);
  const n = obj.shape.reduce((a, b) => a * b, 1);
  if (n * ITEM_SIZE[obj.dtype] !== obj.data.byteLength) fail(`${name}: ${obj.data.byteLength} bytes do not hold shape [${obj.shape}]`);
  if (has(obj, "scale") && obj.dtype !== "<i2") fail(`${name}: scale is for <i2 arrays only`);
  const view = new DataView(obj.data.buffer, obj.data.byteOffset, obj.data.byteLength);
  let values;
  if (obj.dtype === "<i4") {
    values = new Int32Array(n);
    for (let i = 0; i < n; i++) values[i] = view.getInt32(i * 4, true);
    return { dtype: obj.dtype, shape: obj.shape, values };
  }
  values = new Float32Array(n);
  if (obj.dtype === "<f4") {
    for (let i = 0; i < n; i++) values[i] = view.getFloat32(i * 4, true);
  } else if (obj.dtype === "<f2") {
    for (let i = 0; i < n; i++) values[i] = halfToFloat(view.getUint16(i * 2, true));
  } else if (has(obj, "scale")) {
    // rule 4: float32(data[i]) * float32(scale) in float32. The product of two float32 values is exact in a
    // double, so rounding it once into the Float32Array is the float32 product.
    if (!isNumber(obj.scale) || !Number.isFinite(obj.scale)) fail(`${name}: scale must be a finite number`);
    const scale = Math.fround(obj.scale);
    for (let i = 0; i < n; i++) values[i] = view.getInt16(i * 2, true) * scale;
  } else {
    for (let i = 0; i < n; i++) values[i] = view.getInt16(i * 2, true);
  }
  for (let i = 0; i < n; i++) if (!Number.isFinite(values[i])) fail(`${name}: holds NaN or infinity`);
  return { dtype: obj.dtype, shape: obj.shape, values };
}

const VERTICES = ["<f4", "<f2", "<i2"];

function faces(obj, name, numVertices) { // (F, 3) <i4, every index in [0, numVertices)
  const f = unpackArray(obj, name, ["<i4"], [null, 3]);
  for (const i of f.values) if (i < 0 || i >= numVertices) fail(`${name}: indices must lie in [0, ${numVertices})`);
  return f;
}

function decodeHands(p, where) {
  const hands = has(p, "hands") ? p.hands : {};
  const skips = has(p, "hand_skips") ? p.hand_skips : {};
  if (!isMap(hands) || !isMap(skips)) fail(`${where}: hands and hand_skips must be maps`);
  const out = {};
  const outSkips = {};
  for (const side of HAND_SIDES) { // other keys are ignored (rule 15)
    if (has(skips, side)) {
      if (typeof skips[side] !== "string") fail(`${where}.hand_skips.${side}: expected a reason string`);
      outSkips[side] = skips[side];
    }
    if (!has(hands, side)) continue;
    const h = hands[side];
    const name = `${where}.hands.${side}`;
    if (!isMap(h)) fail(`${name}: expected a map`);
    const hand = { side };
    for (const [key, shape] of Object.entries(HAND_SHAPES)) {
      hand[key] = unpackArray(required(h, key, name, isMap, "an array"), `${name}.${key}`, ["<f4"], shape);
    }
    hand.vertices = has(h, "vertices") ? unpackArray(h.vertices, `${name}.vertices`, VERTICES, [null, 3]) : null;
    hand.center = numbers(required(h, "center", name, Array.isArray, "2 numbers"), 2, `${name}.center`);
    hand.size = finite(h, "size", name);
    out[side] = hand;
  }
  return [out, outSkips];
}

function decodePerson(p, i) {
  const where = `persons[${i}]`;
  if (!isMap(p)) fail(`${where} is not a map`);
  const out = {
    track_id: int(p, "track_id", where),
    state: required(p, "state", where, (s) => TRACK_STATES.includes(s), TRACK_STATES.join("/")),
    box: numbers(required(p, "box", where, Array.isArray, "4 numbers"), 4, `${where}.box`),
    score: finite(p, "score", where),
    predicted: has(p, "predicted") ? required(p, "predicted", where, (v) => typeof v === "boolean", "a bool") : false,
    center: has(p, "center") ? numbers(p.center, 2, `${where}.center`) : [NaN, NaN],
    size: has(p, "size") ? finite(p, "size", where) : NaN,
  };
  for (const [key, shape] of Object.entries(BODY_SHAPES)) {
    if (!has(p, key) && (key === "rotmat" || key === "betas")) { out[key] = null; continue; } // SMPL head only
    out[key] = unpackArray(required(p, key, where, isMap, "an array"), `${where}.${key}`, ["<f4"], shape);
  }
  out.vertices = has(p, "vertices") ? unpackArray(p.vertices, `${where}.vertices`, VERTICES, [null, 3]) : null;
  [out.hands, out.hand_skips] = decodeHands(p, where);
  return out;
}

// Topic (Buffer or string) and payload bytes -> message; throws an Error naming what the doc refuses.
function decodeMessage(topic, payload, maxBytes = 64 * 1024 * 1024) {
  if (payload.length > maxBytes) fail(`message of ${payload.length} bytes is over the limit of ${maxBytes}`);
  const topicText = typeof topic === "string" ? topic : utf8.decode(topic);
  checkStructure(payload);
  const n = payload.length;
  const m = new Decoder({ maxStrLength: n, maxBinLength: n, maxArrayLength: n, maxMapLength: n, maxExtLength: n })
    .decode(payload); // trailing bytes throw (rule 16)
  if (!isMap(m)) fail("message is not a map");
  if (m.v !== SCHEMA_VERSION) fail(`schema version ${m.v} is not ${SCHEMA_VERSION}`);
  if (!KINDS.includes(m.kind)) fail(`unknown message kind ${m.kind}`);
  const where = `${m.kind} message`;
  const stream = required(m, "stream", where, (s) => typeof s === "string", "a string");
  const codePoints = [...stream].length;
  if (codePoints < 1 || codePoints > MAX_STREAM_ID || stream.includes("/")) fail(`${where}: stream id must be 1 to 256 characters without '/'`);
  if (topicText !== `${stream}/${m.kind}`) fail(`topic ${topicText} does not match the payload's stream and kind`);
  int(m, "seq", where);
  finite(m, "wall", where);
  if (m.kind === "topology") {
    const nv = int(m, "num_vertices", where);
    m.faces = faces(required(m, "faces", where, isMap, "an array"), "topology.faces", nv);
    for (const key of ["joint_names", "h36m_joint_names"]) {
      required(m, key, where, (a) => Array.isArray(a) && a.every((s) => typeof s === "string"), "a list of strings");
    }
    required(m, "coordinates", where, isMap, "a map");
    if (has(m, "vertices_dtype") && !VERTEX_DTYPES.includes(m.vertices_dtype)) fail(`${where}: unknown vertices_dtype`);
    if (has(m, "vertices_every")) int(m, "vertices_every", where, 0, MAX_SIDE);
    if (has(m, "hand")) {
      const hand = required(m, "hand", where, isMap, "a map");
      const hnv = int(hand, "num_vertices", "topology.hand");
      for (const key of ["faces_right", "faces_left"]) {
        hand[key] = faces(required(hand, key, "topology.hand", isMap, "an array"), `topology.hand.${key}`, hnv);
      }
      required(hand, "joint_names", "topology.hand", (a) => Array.isArray(a) && a.every((s) => typeof s === "string"), "a list of strings");
    }
  } else if (m.kind === "frame") {
    int(m, "index", where);
    if (has(m, "pts") && m.pts !== null) finite(m, "pts", where);
    for (const key of ["width", "height"]) if (has(m, key)) int(m, key, where, 1, MAX_SIDE);
    const times = required(m, "times", where, isMap, "a map");
    for (const key of Object.keys(times)) finite(times, key, `${where}: times`);
    int(m, "dropped", where);
    if (has(m, "focal") && m.focal !== null) finite(m, "focal", where, true);
    const persons = required(m, "persons", where, Array.isArray, "a list");
    m.persons = persons.map(decodePerson);
    const ids = new Set(m.persons.map((p) => p.track_id));
    if (ids.size !== m.persons.length) fail(`${where}: a track_id appears twice among the persons`);
    const lost = has(m, "lost") ? required(m, "lost", where, Array.isArray, "a list") : [];
    for (let i = 0; i < lost.length; i++) int(lost, i, `${where}: lost`);
    m.lost = lost;
  } else {
    int(m, "frames", where);
    required(m, "reason", where, (s) => typeof s === "string", "a string");
    // optional: the publisher's other streams still going (several streams, "Several streams")
    m.streams_open = has(m, "streams_open")
      ? required(m, "streams_open", where, (a) => Array.isArray(a) && a.every((s) => typeof s === "string"),
        "a list of stream ids")
      : [];
  }
  return m;
}

module.exports = { decodeMessage, checkStructure, MAX_COUNT };

// `node decode.js RECORDING`: each record's verdict as one JSON line, then {"rss_max": bytes}; the tests
// compare it with the Python decoder's.
if (require.main === module) {
  const fs = require("fs");
  const b64 = (a) => Buffer.from(a.values.buffer, a.values.byteOffset, a.values.byteLength).toString("base64");
  const summary = (m) => {
    if (m.kind !== "frame") return { kind: m.kind, stream: m.stream, seq: m.seq };
    return { kind: m.kind, stream: m.stream, seq: m.seq, index: m.index, lost: m.lost, persons: m.persons.map((p) => {
      const arrays = {};
      for (const key of [...Object.keys(BODY_SHAPES), "vertices"]) arrays[key] = p[key] ? b64(p[key]) : null;
      const hands = {};
      for (const [side, h] of Object.entries(p.hands)) hands[side] = { joints3d: b64(h.joints3d), vertices: h.vertices ? b64(h.vertices) : null };
      return { track_id: p.track_id, state: p.state, predicted: p.predicted, arrays, hands, hand_skips: p.hand_skips };
    }) };
  };
  let rssMax = 0;
  for (const rec of decodeMulti(fs.readFileSync(process.argv[2]), { maxBinLength: 2 ** 31 - 1 })) {
    let line;
    try {
      line = { ok: true, ...summary(decodeMessage(rec[1], rec[2])) };
    } catch (e) {
      line = { ok: false, error: String(e.message) };
    }
    console.log(JSON.stringify(line));
    rssMax = Math.max(rssMax, process.memoryUsage().rss);
  }
  console.log(JSON.stringify({ rss_max: rssMax }));
}
