// What the page offers and picks by default: voices (grouped by language, the browser's language
// first), avatars (usable or not, and why) and back ends. Pure functions: node's test runner
// checks them (tests/clients/js/choices.test.mjs), the browser tests check the page using them.

/** "en-US" / "en_us" → "en-us". */
export function normTag(tag) {
  return String(tag ?? "").trim().toLowerCase().replace(/_/g, "-");
}

/** The base language of a voice ("en-gb" → "en"), from its language tag, else its id. */
export function baseLanguage(voice) {
  return normTag(voice.language || voice.id).split("-")[0];
}

/**
 * The voice to start with: the one asked for in the URL, else the first of the browser's
 * languages a voice speaks (exact tag first, then the base language), else en-us, else English,
 * else the first voice. Returns an id, or null when there are no voices.
 */
export function defaultVoice(voices, { wanted = null, languages = [] } = {}) {
  if (!voices.length) return null;
  const byId = (id) => voices.find((v) => normTag(v.id) === normTag(id));
  if (wanted && byId(wanted)) return byId(wanted).id;
  const tags = [...languages, "en-us", "en"].map(normTag).filter(Boolean);
  for (const tag of tags) {
    const exact = voices.find((v) => normTag(v.id) === tag)
      ?? voices.find((v) => normTag(v.language) === tag);
    if (exact) return exact.id;
    const base = tag.split("-")[0];
    // The plain language voice ("fr") before a regional one ("fr-be").
    const plain = voices.find((v) => normTag(v.id) === base)
      ?? voices.find((v) => normTag(v.language) === base);
    if (plain) return plain.id;
    const regional = voices.find((v) => baseLanguage(v) === base);
    if (regional) return regional.id;
  }
  return voices[0].id;
}

/**
 * Voices grouped by base language, groups sorted by their display name and voices by name:
 * [{language, label, voices}]. `label(code)` names a language (Intl.DisplayNames in the page).
 */
export function groupVoices(voices, label = (code) => code) {
  const groups = new Map();
  for (const v of voices) {
    const lang = baseLanguage(v);
    if (!groups.has(lang)) groups.set(lang, { language: lang, label: label(lang) || lang, voices: [] });
    groups.get(lang).voices.push(v);
  }
  const name = (v) => String(v.name ?? v.id);
  const out = [...groups.values()];
  for (const g of out) g.voices.sort((a, b) => name(a).localeCompare(name(b)));
  out.sort((a, b) => a.label.localeCompare(b.label));
  return out;
}

/**
 * Whether an avatar can run here and, if not, why: the server's own word (`usable`, `reason` in
 * the avatar listing) when it gives one; else its back end's entry of GET /backends; else usable.
 */
export function avatarUsability(av, backends = null) {
  const type = av?.lipsync_assets?.type;
  const b = type && backends ? backends.find((x) => x.type === type) : null;
  if (typeof av?.usable === "boolean") {
    return { usable: av.usable, reason: av.usable ? null : (av.reason ?? b?.reason ?? null) };
  }
  if (b && b.available === false) return { usable: false, reason: b.reason ?? null };
  return { usable: true, reason: null };
}

/** The name to show for an avatar: its own, else a short form of its id. */
export function avatarName(av) {
  if (av?.name) return String(av.name);
  const id = String(av?.avatar_id ?? "");
  return id.length > 14 ? `${id.slice(0, 12)}…` : id;
}

/** Make an error message fit for a person: no "(HTTP 422)" prefixes, no stack or repr noise. */
export function plainMessage(message) {
  let m = String(message ?? "").trim();
  m = m.replace(/^[\w ]+ failed \(HTTP \d{3}\): /, "");
  // Object reprs and Python class prefixes, should a server still send them.
  m = m.replace(/<[\w.]+ object at 0x[0-9a-f]+>/gi, "the file");
  m = m.replace(/\b(?:[A-Za-z_]+\.)*[A-Z][A-Za-z]*(?:Error|Exception): ?/g, "");
  m = m.replace(/\s+/g, " ").trim();
  if (!m) return "Something went wrong. Try again.";
  return m[0].toUpperCase() + m.slice(1);
}
