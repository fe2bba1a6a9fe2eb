// The page's choices (src/lipcore/web/choices.js): default voice, voice groups, avatar usability,
// plain error messages. Run: node --test tests/clients/js/

import assert from "node:assert/strict";
import { test } from "node:test";

import {
  avatarName, avatarUsability, defaultVoice, groupVoices, plainMessage,
} from "../../../src/lipcore/web/choices.js";

const VOICES = [
  { id: "af", name: "Afrikaans", language: "af" },
  { id: "de", name: "German", language: "de" },
  { id: "en-gb", name: "English (UK)", language: "en-gb" },
  { id: "en-us", name: "English (America)", language: "en-us" },
  { id: "fr", name: "French", language: "fr" },
  { id: "fr-be", name: "French (Belgium)", language: "fr-be" },
  { id: "pt-br", name: "Portuguese (Brazil)", language: "pt-br" },
];

test("the default voice follows the browser's languages, then en-us, never the first voice", () => {
  assert.equal(defaultVoice(VOICES), "en-us");
  assert.equal(defaultVoice(VOICES, { languages: ["en-US"] }), "en-us");
  assert.equal(defaultVoice(VOICES, { languages: ["en-GB"] }), "en-gb");
  assert.equal(defaultVoice(VOICES, { languages: ["fr-FR"] }), "fr");
  assert.equal(defaultVoice(VOICES, { languages: ["fr-BE"] }), "fr-be");
  assert.equal(defaultVoice(VOICES, { languages: ["de-AT", "en"] }), "de");
  assert.equal(defaultVoice(VOICES, { languages: ["pt-PT"] }), "pt-br");
  assert.equal(defaultVoice(VOICES, { languages: ["ja-JP"] }), "en-us");
  assert.equal(defaultVoice(VOICES, { wanted: "fr", languages: ["de"] }), "fr");
  assert.equal(defaultVoice(VOICES, { wanted: "nope", languages: ["de"] }), "de");
  assert.equal(defaultVoice([{ id: "af", language: "af" }], { languages: ["ja"] }), "af");
  assert.equal(defaultVoice([]), null);
});

test("voices are grouped by language, groups and voices sorted by name", () => {
  const names = { af: "Afrikaans", de: "German", en: "English", fr: "French", pt: "Portuguese" };
  const groups = groupVoices([...VOICES].reverse(), (c) => names[c]);
  assert.deepEqual(groups.map((g) => g.label),
    ["Afrikaans", "English", "French", "German", "Portuguese"]);
  assert.deepEqual(groups[1].voices.map((v) => v.id), ["en-us", "en-gb"]);
  assert.deepEqual(groups[2].voices.map((v) => v.id), ["fr", "fr-be"]);
});

test("an avatar's usability: the server's word first, then its back end's, else usable", () => {
  const backends = [
    { type: "sprites", available: true, reason: null },
    { type: "onnx", available: false, reason: "no model" },
  ];
  const onnx = { avatar_id: "a", lipsync_assets: { type: "onnx" } };
  const sprites = { avatar_id: "b", lipsync_assets: { type: "sprites" } };
  assert.deepEqual(avatarUsability(onnx, backends), { usable: false, reason: "no model" });
  assert.deepEqual(avatarUsability(sprites, backends), { usable: true, reason: null });
  assert.deepEqual(avatarUsability(onnx, null), { usable: true, reason: null });
  assert.deepEqual(avatarUsability({ ...sprites, usable: false, reason: "broken manifest" },
    backends), { usable: false, reason: "broken manifest" });
  assert.deepEqual(avatarUsability({ ...onnx, usable: true, reason: null }, backends),
    { usable: true, reason: null });
  assert.deepEqual(avatarUsability({ avatar_id: "c" }, backends), { usable: true, reason: null });
});

test("avatar names and plain messages", () => {
  assert.equal(avatarName({ avatar_id: "a_x", name: "Grace" }), "Grace");
  assert.equal(avatarName({ avatar_id: "a_0123456789abcdefghij" }), "a_0123456789…");
  assert.equal(
    plainMessage("avatarize failed (HTTP 422): uploaded photo (40 bytes) is not a readable image "
      + "(UnidentifiedImageError: cannot identify image file <_io.BytesIO object at 0x7f3a2c>)"),
    "Uploaded photo (40 bytes) is not a readable image (cannot identify image file the file)");
  assert.equal(plainMessage(""), "Something went wrong. Try again.");
});
