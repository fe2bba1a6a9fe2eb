// The web client's protocol module against the shared vectors (tests/vectors/*.json) and the
// behaviour the page relies on: interpolation on the audio clock, the barge-in ramp, clock sync.
// Run: node --test tests/clients/js/   (tests/clients/test_web_logic.py runs it under pytest)

import assert from "node:assert/strict";
import { readdirSync, readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { test } from "node:test";
import { fileURLToPath } from "node:url";

import {
  activity, affineAt, blendMeshOffsets, ClockSync, clientMessages, CLIENT_MESSAGE_TYPES,
  decodeBinaryFrame, decodeClientMessage, decodePatchFrame, decodeServerMessage,
  encodeBinaryFrame, frameIndexAt, PatchTimeline, pcm16ToFloat32, ProtocolError, rampToRest,
  SERVER_MESSAGE_TYPES, topCells, VisemeTrack, withRest,
} from "../../../src/lipcore/web/protocol.js";

const HERE = dirname(fileURLToPath(import.meta.url));
const VECTORS = join(HERE, "..", "..", "vectors");
const load = (name) => JSON.parse(readFileSync(join(VECTORS, name), "utf8"));
const messageFiles = readdirSync(VECTORS).filter((f) => /^(server|client)\..+\.json$/.test(f));
const hex = (s) => Uint8Array.from(s.match(/../g) ?? [], (b) => parseInt(b, 16));

test("the vectors exist and cover every message type this client knows", () => {
  assert.ok(messageFiles.length > 0, `no vectors in ${VECTORS}`);
  const server = messageFiles.filter((f) => f.startsWith("server.")).map((f) => load(f).type);
  const client = messageFiles.filter((f) => f.startsWith("client.")).map((f) => load(f).type);
  assert.deepEqual([...server].sort(), [...SERVER_MESSAGE_TYPES].sort());
  assert.deepEqual([...client].sort(), [...CLIENT_MESSAGE_TYPES].sort());
});

for (const file of messageFiles) {
  const vec = load(file);
  const decode = vec.direction === "server_to_client" ? decodeServerMessage : decodeClientMessage;
  for (const c of vec.valid) {
    test(`${file}: valid '${c.name}' decodes`, () => {
      const msg = decode(JSON.stringify(c.message));
      assert.equal(msg.type, vec.type);
    });
  }
  for (const c of vec.invalid) {
    test(`${file}: invalid '${c.name}' is refused (${c.reason})`, () => {
      assert.throws(() => decode(JSON.stringify(c.message)), ProtocolError);
    });
  }
}

test("binary header vectors: valid frames decode to the stated header and samples", () => {
  const vec = load("binary_header.json");
  assert.equal(vec.header_size, 16);
  for (const c of vec.valid) {
    const f = decodeBinaryFrame(hex(c.hex));
    assert.deepEqual(
      { kind: f.kind, version: f.version, flags: f.flags, utterance: f.utterance,
        pts_ms: f.ptsMs },
      c.header, c.name,
    );
    assert.deepEqual([...f.payload], [...hex(c.payload_hex)], c.name);
    const samples = [...pcm16ToFloat32(f.payload)].map((x) => Math.round(x * 32768));
    assert.deepEqual(samples, c.samples, c.name);
    // kind 3 carries a visemes event in front of the audio: a valid server message.
    assert.equal(f.visemesJson, c.visemes_json ?? null, c.name);
    if (f.visemesJson !== null) {
      const msg = decodeServerMessage(f.visemesJson);
      assert.equal(msg.type, "visemes");
      assert.equal(msg.utterance, c.header.utterance);
    }
    // Our encoder writes the very same bytes.
    const again = encodeBinaryFrame({ utterance: c.header.utterance, ptsMs: c.header.pts_ms,
      payload: hex(c.payload_hex), visemesJson: c.visemes_json ?? null });
    assert.deepEqual([...again], [...hex(c.hex)], c.name);
  }
  for (const c of vec.invalid) {
    assert.throws(() => decodeBinaryFrame(hex(c.hex)), ProtocolError, c.name);
  }
});

test("mouth-patch vectors: valid frames decode to the stated header and image", () => {
  const vec = load("binary_patch.json");
  assert.equal(vec.header_size, 32);
  assert.ok(vec.valid.length > 0 && vec.invalid.length > 0);
  for (const c of vec.valid) {
    // The common header reads as kind 2 too (what the session dispatches on).
    assert.equal(decodeBinaryFrame(hex(c.hex)).kind, 2, c.name);
    const p = decodePatchFrame(hex(c.hex));
    assert.deepEqual(
      { kind: p.kind, version: p.version, flags: 0, utterance: p.utterance, pts_ms: p.ptsMs,
        idle_index: p.idleIndex, x: p.x, y: p.y, w: p.w, h: p.h, format: p.format },
      c.header, c.name,
    );
    assert.equal(p.mime, `image/${c.header.format}`);
    assert.deepEqual([...p.image], [...hex(c.image_hex)], c.name);
  }
  for (const c of vec.invalid) {
    assert.throws(() => decodePatchFrame(hex(c.hex)), ProtocolError, c.name);
  }
});

test("patches: the latest one due at the audio clock, idle mouth before, after and on a stop", () => {
  const t = new PatchTimeline();
  assert.equal(t.at(0), null);
  for (const pts of [40, 80, 120]) assert.equal(t.add(pts, { pts }), null);
  assert.equal(t.at(39.9), null); // before the first patch: the idle mouth
  assert.equal(t.at(40).item.pts, 40);
  assert.equal(t.at(79).item.pts, 40);
  assert.equal(t.at(80).item.pts, 80);
  assert.equal(t.at(500).item.pts, 120); // the stream is catching up: the last one holds
  // A late patch slots in by pts; one with the same pts replaces (the old item comes back).
  assert.equal(t.add(60, { pts: 60 }), null);
  assert.equal(t.at(70).item.pts, 60);
  assert.deepEqual(t.add(60, { pts: 60, again: true }), { pts: 60 });
  assert.equal(t.at(70).item.again, true);
  // The end of the utterance's audio: idle from there on.
  t.end(130);
  assert.equal(t.at(129).item.pts, 120);
  assert.equal(t.at(130), null);
  assert.equal(t.finishedAt(130), true);
});

test("patches: the clock only moves on, so older ones are released; a stop shows idle", () => {
  const t = new PatchTimeline();
  for (const pts of [0, 40, 80, 120, 160]) t.add(pts, { pts });
  assert.deepEqual(t.prune(-5), []); // before the first: nothing to release
  assert.deepEqual(t.prune(85).map((i) => i.pts), [0, 40]);
  assert.equal(t.at(85).item.pts, 80); // the one shown stays
  assert.equal(t.size, 3);
  t.stop(100);
  assert.equal(t.at(99).item.pts, 80);
  assert.equal(t.at(100), null);
  assert.deepEqual(t.prune(100).map((i) => i.pts), [80, 120, 160]);
  assert.equal(t.size, 0);
  t.add(200, { pts: 200 });
  assert.deepEqual(t.clear().map((i) => i.pts), [200]);
});

test("a binary frame inside a larger buffer (byteOffset) decodes", () => {
  const frame = encodeBinaryFrame({ utterance: 9, ptsMs: 40, payload: new Int16Array([5, -5]) });
  const big = new Uint8Array(frame.length + 3);
  big.set(frame, 3);
  const f = decodeBinaryFrame(big.subarray(3));
  assert.equal(f.utterance, 9);
  assert.deepEqual([...pcm16ToFloat32(f.payload)].map((x) => x * 32768), [5, -5]);
});

test("non-JSON and unknown types are clear protocol errors", () => {
  assert.throws(() => decodeServerMessage("{oops"), /not JSON/);
  assert.throws(() => decodeServerMessage('{"type":"nope"}'), /unknown server message type/);
  assert.throws(() => decodeServerMessage("[1]"), /JSON object/);
});

test("client messages built by the page pass the strict client decoder", () => {
  for (const m of [clientMessages.ping(1, 2.5), clientMessages.speak("Hallo", true),
    clientMessages.textDelta("Ha"), clientMessages.textEnd(), clientMessages.stop()]) {
    assert.deepEqual(decodeClientMessage(JSON.stringify(m)), m);
  }
});

// ------------------------------------------------------------------------- interpolation

function track() {
  const t = new VisemeTrack(1);
  t.add([
    { pts_ms: 0, weights: {} },
    { pts_ms: 40, weights: { AI: 1 } },
    { pts_ms: 80, weights: { MBP: 0.8, O: 0.2 } },
  ]);
  return t;
}

test("weights are interpolated linearly between frames on the audio timeline", () => {
  const t = track();
  assert.deepEqual(t.weightsAt(0), {});
  assert.ok(Math.abs(t.weightsAt(20).AI - 0.5) < 1e-9);
  const w = t.weightsAt(60);
  assert.ok(Math.abs(w.AI - 0.5) < 1e-9 && Math.abs(w.MBP - 0.4) < 1e-9
    && Math.abs(w.O - 0.1) < 1e-9);
  assert.deepEqual(t.weightsAt(80), { MBP: 0.8, O: 0.2 });
  // Between the last frame received and the end, the last shape holds (stream catching up).
  assert.deepEqual(t.weightsAt(500), { MBP: 0.8, O: 0.2 });
});

test("sampled weights never sum above 1 and Rest is the remainder", () => {
  const t = track();
  for (let ms = -50; ms < 200; ms += 3.7) {
    const full = withRest(t.weightsAt(ms));
    const sum = Object.values(full).reduce((a, b) => a + b, 0);
    assert.ok(Math.abs(sum - 1) < 1e-9, `t=${ms}: ${sum}`);
  }
});

test("after utterance_end the mouth closes to Rest within 100 ms", () => {
  const t = track();
  t.end(100);
  assert.ok(activity(t.weightsAt(100)) > 0.9);
  assert.ok(activity(t.weightsAt(150)) < activity(t.weightsAt(100)));
  assert.deepEqual(t.weightsAt(200), {});
  assert.ok(t.finishedAt(200));
  assert.ok(!t.finishedAt(150));
});

test("out-of-order and duplicate frames do not break the track", () => {
  const t = track();
  t.add([{ pts_ms: 60, weights: { E: 1 } }, { pts_ms: 40, weights: { U: 1 } }]);
  assert.deepEqual(t.pts, [0, 40, 60, 80]);
  assert.equal(t.weightsAt(40).AI, 1);
});

test("final frames replace provisional ones with the same pts; finals are never replaced", () => {
  const t = new VisemeTrack(1);
  t.add([{ pts_ms: 0, weights: { AI: 0.3 } }, { pts_ms: 33, weights: { AI: 0.5 } },
    { pts_ms: 66, weights: { AI: 0.6 } }], true);
  // A later guess updates the guess and extends it.
  t.add([{ pts_ms: 66, weights: { AI: 0.7 } }, { pts_ms: 100, weights: { O: 0.4 } }], true);
  assert.deepEqual(t.pts, [0, 33, 66, 100]);
  assert.equal(t.weightsAt(66).AI, 0.7);
  // The final frames arrive: they replace the guesses at their times, the rest stays a guess.
  t.add([{ pts_ms: 0, weights: { AI: 0.2 } }, { pts_ms: 33, weights: { E: 0.6 } }]);
  assert.deepEqual(t.pts, [0, 33, 66, 100]);
  assert.deepEqual(t.weightsAt(33), { E: 0.6 });
  assert.equal(t.weightsAt(0).AI, 0.2);
  // A guess never overrides a final frame, a duplicate final is dropped ...
  t.add([{ pts_ms: 33, weights: { U: 1 } }], true);
  t.add([{ pts_ms: 33, weights: { U: 1 } }]);
  assert.deepEqual(t.weightsAt(33), { E: 0.6 });
  // ... and the remaining guesses are replaced as their finals come.
  t.add([{ pts_ms: 66, weights: { MBP: 1 } }, { pts_ms: 100, weights: {} },
    { pts_ms: 133, weights: { AI: 1 } }]);
  assert.deepEqual(t.pts, [0, 33, 66, 100, 133]);
  assert.deepEqual(t.weightsAt(66), { MBP: 1 });
  assert.deepEqual(t.weightsAt(100), {});
  assert.equal(t.guessed.size, 0);
});

test("barge-in ramps from the current shape to Rest over 100–200 ms, monotonically", () => {
  const t = new VisemeTrack(1);
  t.add([{ pts_ms: 0, weights: { AI: 1 } }, { pts_ms: 1000, weights: { AI: 1 } }]);
  t.stop(300, 150);
  assert.equal(t.weightsAt(300).AI, 1);
  let prev = 1;
  for (let ms = 300; ms <= 450; ms += 10) {
    const a = activity(t.weightsAt(ms));
    assert.ok(a <= prev + 1e-12, `not monotone at ${ms}`);
    prev = a;
  }
  assert.equal(activity(t.weightsAt(450)), 0);
  assert.ok(t.finishedAt(450));
  // The ramp is clamped into the protocol's 100–200 ms.
  const t2 = new VisemeTrack(2);
  t2.add([{ pts_ms: 0, weights: { O: 1 } }]);
  t2.stop(0, 20);
  assert.ok(activity(t2.weightsAt(50)) > 0);
  assert.equal(activity(t2.weightsAt(100)), 0);
  // A second stop does not restart the ramp.
  t2.stop(500, 200);
  assert.equal(t2.stoppedAt.ptsMs, 0);
});

test("a stop after the utterance ended does not reopen the mouth", () => {
  // The last frame is open (the stream ended mid-shape); the end ramp has closed it by 400 ms.
  const t = new VisemeTrack(1);
  t.add([{ pts_ms: 0, weights: { AI: 1 } }, { pts_ms: 300, weights: { AI: 1 } }]);
  t.end(300);
  assert.equal(activity(t.weightsAt(400)), 0);
  t.stop(400, 150);
  for (let ms = 400; ms <= 600; ms += 10) assert.equal(activity(t.weightsAt(ms)), 0, `at ${ms}`);
  // Stopped during the end ramp: it ramps down from where the end ramp was, never up.
  const u = new VisemeTrack(2);
  u.add([{ pts_ms: 0, weights: { AI: 1 } }, { pts_ms: 300, weights: { AI: 1 } }]);
  u.end(300);
  const at = activity(u.weightsAt(350));
  u.stop(350, 150);
  assert.ok(at > 0 && at < 1);
  for (let ms = 350; ms <= 520; ms += 10) assert.ok(activity(u.weightsAt(ms)) <= at + 1e-12);
});

test("rampToRest is smooth: half way it is at half the weight", () => {
  const w = rampToRest({ AI: 0.8 }, 75, 150);
  assert.ok(Math.abs(w.AI - 0.4) < 1e-9);
  assert.deepEqual(rampToRest({ AI: 0.8 }, 150, 150), {});
});

test("the first shape eases in over 40 ms instead of popping", () => {
  const t = new VisemeTrack(1);
  t.add([{ pts_ms: 100, weights: { AI: 1 } }]);
  assert.deepEqual(t.weightsAt(50), {});
  assert.ok(Math.abs(t.weightsAt(80).AI - 0.5) < 1e-9);
});

test("topCells picks the highest weights, Rest included, renormalised", () => {
  const cells = topCells({ AI: 0.5, O: 0.3, MBP: 0.1 }, 3);
  assert.deepEqual(cells.map((c) => c.cls), ["AI", "O", "MBP"]);
  assert.ok(Math.abs(cells.reduce((s, c) => s + c.w, 0) - 1) < 1e-9);
  assert.deepEqual(topCells({}, 3), [{ cls: "Rest", w: 1 }]);
  const two = topCells({ AI: 0.2 }, 2);
  assert.deepEqual(two.map((c) => c.cls), ["Rest", "AI"]);
  assert.ok(Math.abs(two[0].w - 0.8) < 1e-9);
});

// ------------------------------------------------------------------------- clock, mesh, frames

test("clock sync keeps the offset of the pong with the smallest round trip", () => {
  const c = new ClockSync();
  assert.equal(c.offsetMs, 0);
  // Server clock = client + 1000. A slow pong (rtt 100, asymmetric) and a fast one (rtt 10).
  c.onPong({ id: 1, client_time_ms: 0, server_time_ms: 1090 }, 100);
  c.onPong({ id: 2, client_time_ms: 200, server_time_ms: 1205 }, 210);
  assert.equal(c.rttMs, 10);
  assert.equal(c.offsetMs, 1000);
  assert.equal(c.toServer(5), 1005);
  assert.equal(c.onPong({ id: 3, client_time_ms: 500, server_time_ms: 0 }, 400), null);
});

test("mesh offsets blend linearly by weight; Rest moves nothing", () => {
  const def = { grid: { cols: 2, rows: 1 }, roi: { x: 0, y: 0, w: 2, h: 1 },
    targets: { AI: [[0, 10], [0, 20]], O: [[4, 0], [-4, 0]] } };
  assert.deepEqual([...blendMeshOffsets(def, { AI: 0.5, O: 0.25, Rest: 0.25 })], [1, 5, -1, 10]);
  assert.deepEqual([...blendMeshOffsets(def, {})], [0, 0, 0, 0]);
});

test("video media time maps to the idle frame index and its affine, wrapping the loop", () => {
  assert.equal(frameIndexAt(0, 25, 100), 0);
  assert.equal(frameIndexAt(0.04, 25, 100), 1);
  assert.equal(frameIndexAt(0.0399999, 25, 100), 1); // a hair before the boundary
  assert.equal(frameIndexAt(4.0, 25, 100), 0);
  const mt = { fps: 25, affines: [[1, 0, 0, 0, 1, 0], [1, 0, 2, 0, 1, 3]] };
  assert.deepEqual(affineAt(mt, 3), [1, 0, 2, 0, 1, 3]);
});
