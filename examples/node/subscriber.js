#!/usr/bin/env node
// A fastmetro-stream subscriber in Node.js: receives wire schema v1 messages (docs/schema.md) over
// ZeroMQ and decodes them into typed arrays.
//
//   npm install
//   node subscriber.js --endpoint tcp://127.0.0.1:5555                # live stream (PUB/SUB)
//   node subscriber.js --mode lossless --count 100 --json             # PUSH/PULL, JSON lines out
//   node subscriber.js --endpoint tcp://cam-a:5555 --endpoint tcp://cam-b:5555   # several publishers
//
// With several endpoints one socket connects to every publisher and their streams arrive merged, told
// apart by stream id. Each stream numbers its tracks on its own, so a person is (stream id, track id):
// `personKey(stream, trackId)`; the per-person state here is kept under that key.
// Every message has two ZeroMQ frames: the topic "<stream>/<kind>" and a msgpack map. Arrays are maps
// {dtype: "<f4" | "<f2" | "<i2" | "<i4", shape: [...], data: <bytes>, scale?: number}; decode.js checks
// every rule of docs/schema.md and turns them into typed arrays. Stream ids come from the network, so
// per-stream state lives in Maps (a stream named "__proto__" or "constructor" is a stream like any other).
"use strict";

const zmq = require("zeromq");
const { decodeMessage } = require("./decode"); // the schema's decoding rules (docs/schema.md)

let MAX_MESSAGE_BYTES = 64 * 1024 * 1024; // larger messages are counted and skipped, as in Python

function parseArgs(argv) {
  const opts = { endpoints: [], mode: "latest", stream: "", count: 0, json: false, timeout: 0 };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === "--endpoint") opts.endpoints.push(argv[++i]); // repeatable: several publishers
    else if (a === "--mode") opts.mode = argv[++i];
    else if (a === "--stream") opts.stream = argv[++i];
    else if (a === "--count") opts.count = parseInt(argv[++i], 10);
    else if (a === "--timeout") opts.timeout = parseFloat(argv[++i]);
    else if (a === "--max-message-bytes") MAX_MESSAGE_BYTES = parseInt(argv[++i], 10);
    else if (a === "--json") opts.json = true;
    else if (a === "-h" || a === "--help") {
      console.log("usage: node subscriber.js [--endpoint URL]... [--mode latest|lossless] [--stream ID] " +
        "[--count N] [--timeout SECONDS] [--max-message-bytes N] [--json]");
      process.exit(0);
    } else {
      console.error(`unknown argument ${a} (see --help)`);
      process.exit(2);
    }
  }
  if (opts.endpoints.length === 0) opts.endpoints.push("tcp://127.0.0.1:5555");
  if (!["latest", "lossless"].includes(opts.mode)) {
    console.error(`--mode must be latest or lossless, not ${opts.mode}`);
    process.exit(2);
  }
  return opts;
}

// A person of the merged streams: two streams' track 1 are two persons.
function personKey(stream, trackId) {
  return JSON.stringify([stream, trackId]);
}

const MAX_PERSONS = 4096; // per-person state is bounded: stream ids and track ids come from the network
const MAX_LIVE_STREAMS = 4096; // streams waited for to end

function sum(values) {
  let s = 0;
  for (let i = 0; i < values.length; i++) s += values[i];
  return s;
}

async function main() {
  const opts = parseArgs(process.argv.slice(2));
  const sock = opts.mode === "latest" ? new zmq.Subscriber() : new zmq.Pull();
  sock.receiveHighWaterMark = 16;
  sock.maxMessageSize = 2 * MAX_MESSAGE_BYTES + 4096; // beyond: the connection is dropped, nothing buffered
  sock.linger = 0;
  if (opts.timeout > 0) sock.receiveTimeout = Math.round(opts.timeout * 1000);
  console.error(`subscribed to ${opts.endpoints.join(", ")} (${opts.mode})`);

  const topology = new Map(); // stream -> its topology message
  const lastSeq = new Map(); // stream -> last seq
  const persons = new Map(); // personKey(stream, track) -> { first_index, frames_seen }
  // done when every stream heard of (topology, frames, an end's streams_open) has ended ("Several streams")
  const live = new Set();
  const done = new Set();
  const heard = (s) => { if (!done.has(s) && live.size < MAX_LIVE_STREAMS) live.add(s); };
  let ended = 0;
  const stats = { frames: 0, malformed: 0, oversized: 0, gaps: 0, missed: 0, reconnects: 0 };
  // A frame past maxMessageSize makes ZeroMQ close that connection as a protocol error and never retry it:
  // connect again ourselves where no retry follows a disconnect within 300 ms (docs/schema.md, rule 7)
  const lost = new Map(); // address -> timer
  const watch = (async () => {
    try {
      for await (const ev of sock.events) {
        const address = ev.address;
        if (ev.type === "disconnect") {
          lost.set(address, setTimeout(() => {
            lost.delete(address);
            try { sock.disconnect(address); } catch (e) { /* already gone with its session */ }
            sock.connect(address);
            stats.reconnects++;
          }, 300));
        } else if (ev.type === "connect" || ev.type === "connect:retry" || ev.type === "connect:delay") {
          clearTimeout(lost.get(address));
          lost.delete(address);
        }
      }
    } catch (e) { /* the socket closed */ }
  })();
  // connected once the connection events are watched, so none is missed
  for (const endpoint of opts.endpoints) sock.connect(endpoint);
  if (opts.mode === "latest") sock.subscribe(opts.stream ? `${opts.stream}/` : "");
  try {
    while (true) {
      let parts;
      try {
        parts = await sock.receive();
      } catch (e) {
        if (e.code === "EAGAIN") { console.error(`nothing received for ${opts.timeout} s`); break; }
        throw e;
      }
      let m;
      try {
        if (parts.length !== 2) throw new Error(`${parts.length} frames`);
        if (parts[1].length > MAX_MESSAGE_BYTES) {
          stats.oversized++;
          console.error(`skipped an oversized message: ${parts[1].length} bytes`);
          continue;
        }
        m = decodeMessage(parts[0], parts[1], MAX_MESSAGE_BYTES);
      } catch (e) {
        stats.malformed++; // never crash on input: count and skip
        console.error(`skipped a malformed message: ${e.message}`);
        continue;
      }
      if (opts.stream && m.stream !== opts.stream) continue;
      if (m.kind === "topology") {
        topology.set(m.stream, m);
        done.delete(m.stream); // a stream starting again (a restarted publisher)
        heard(m.stream);
        if (opts.json) {
          console.log(JSON.stringify({ kind: "topology", stream: m.stream, faces: m.faces.shape,
            joint_names: m.joint_names, num_vertices: m.num_vertices }));
        }
        continue;
      }
      if (m.kind === "end") {
        console.log(JSON.stringify({ kind: "end", stream: m.stream, seq: m.seq, frames: m.frames, reason: m.reason, stats }));
        for (const key of persons.keys()) if (JSON.parse(key)[0] === m.stream) persons.delete(key);
        for (const other of m.streams_open) if (other !== m.stream && (!opts.stream || other === opts.stream)) heard(other);
        live.delete(m.stream);
        if (done.size < MAX_LIVE_STREAMS) done.add(m.stream);
        ended++;
        // every stream heard of has ended, and at least one end per publisher
        if (live.size === 0 && ended >= opts.endpoints.length) break;
        continue;
      }
      const last = lastSeq.get(m.stream);
      if (last !== undefined && m.seq > last + 1) { stats.gaps++; stats.missed += m.seq - last - 1; }
      lastSeq.set(m.stream, m.seq);
      if (!topology.has(m.stream)) continue; // wait for the topology before using frames
      stats.frames++;
      heard(m.stream);
      const people = m.persons.map((p) => {
        const key = personKey(m.stream, p.track_id);
        let state = persons.get(key);
        if (state === undefined) {
          if (persons.size >= MAX_PERSONS) persons.delete(persons.keys().next().value); // the oldest goes
          state = { first_index: m.index, frames_seen: 0 };
          persons.set(key, state);
        }
        state.frames_seen++;
        return { p, state };
      }).map(({ p, state }) => ({
        track_id: p.track_id,
        key: [m.stream, p.track_id],
        first_index: state.first_index,
        frames_seen: state.frames_seen,
        state: p.state,
        box: p.box,
        cam_t: Array.from(p.cam_t.values),
        joints2d_sum: sum(p.joints2d.values),
        joints3d_sum: sum(p.joints3d.values),
        vertices: p.vertices ? p.vertices.shape : null,
        vertices_sum: p.vertices ? sum(p.vertices.values) : null,
        smpl: p.betas !== null,
      }));
      for (const tid of m.lost || []) persons.delete(personKey(m.stream, tid)); // tracks that ended here
      if (opts.json) {
        console.log(JSON.stringify({ kind: "frame", stream: m.stream, seq: m.seq, index: m.index, pts: m.pts,
          dropped: m.dropped, persons: people }));
      } else {
        console.log(`${m.stream} frame ${m.index} seq ${m.seq}: ${people.length} persons ` +
          people.map((p) => `${m.stream}#${p.track_id} (${p.state}, ${p.frames_seen} frames)`).join(" "));
      }
      if (opts.count && stats.frames >= opts.count) break;
    }
  } finally {
    for (const timer of lost.values()) clearTimeout(timer);
    sock.events.close();
    sock.close();
    await watch;
  }
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
