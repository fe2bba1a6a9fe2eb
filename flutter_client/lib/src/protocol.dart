// lipcore live protocol v1 (docs/protocol.md): every JSON message as a sealed class with
// fromJson/toJson, and the 16-byte binary frame header.

import 'dart:convert';
import 'dart:typed_data';

import 'package:meta/meta.dart';

/// The protocol version this client speaks.
const int protocolVersion = 1;

/// Size of the binary frame header in bytes.
const int headerBytes = 16;

/// Binary frame kinds.
const int kindAudio = 1;
const int kindPatch = 2;

/// Audio with the `visemes` event of its span in front (`visemes=inline`): after the header a
/// u32 byte length, the UTF-8 JSON event, then the PCM.
const int kindAudioVisemes = 3;

/// The viseme class that is the remainder of every frame.
const String rest = 'Rest';

/// The asset contract's viseme classes, in order.
const List<String> defaultClasses = <String>[
  'Rest', 'AI', 'E', 'U', 'O', 'MBP', 'FV', 'L', 'WQ', 'R', 'CH', 'TH', //
];

/// Viseme weights: class name → weight in [0, 1]; the weights sum to at most 1, the remainder
/// is [rest].
typedef Weights = Map<String, double>;

/// A message that does not follow protocol v1.
class ProtocolException implements Exception {
  const ProtocolException(this.message, {this.field});

  final String message;

  /// The field that was wrong, when one was.
  final String? field;

  @override
  String toString() => 'ProtocolException: $message';
}

// --------------------------------------------------------------------------- field readers

typedef _Json = Map<String, Object?>;

Object? _need(_Json m, String field) {
  if (!m.containsKey(field) || m[field] == null) {
    throw ProtocolException("'${m['type']}' message lacks the field '$field'", field: field);
  }
  return m[field];
}

Never _bad(_Json m, String field, String what) => throw ProtocolException(
      "'${m['type']}' message: field '$field' must be $what, got ${jsonEncode(m[field])}",
      field: field,
    );

String _string(_Json m, String field, {bool nonEmpty = false}) {
  final v = _need(m, field);
  if (v is! String || (nonEmpty && v.isEmpty)) {
    _bad(m, field, nonEmpty ? 'a non-empty string' : 'a string');
  }
  return v;
}

String? _optString(_Json m, String field) =>
    m[field] == null ? null : _string(m, field);

double _number(_Json m, String field, {double? min, double? max}) {
  final v = _need(m, field);
  if (v is! num || !v.isFinite || (min != null && v < min) || (max != null && v > max)) {
    final range = switch ((min, max)) {
      (null, null) => 'a number',
      (final double lo, null) => 'a number >= $lo',
      (null, final double hi) => 'a number <= $hi',
      (final double lo, final double hi) => 'a number in $lo..$hi',
    };
    _bad(m, field, range);
  }
  return v.toDouble();
}

double? _optNumber(_Json m, String field) => m[field] == null ? null : _number(m, field);

int _int(_Json m, String field, {int? min}) {
  final v = _need(m, field);
  if (v is! int || (min != null && v < min)) {
    _bad(m, field, min == null ? 'an integer' : 'an integer >= $min');
  }
  return v;
}

bool? _optBool(_Json m, String field) {
  final v = m[field];
  if (v == null) return null;
  if (v is! bool) _bad(m, field, 'a boolean');
  return v;
}

Object _id(_Json m) {
  final v = _need(m, 'id');
  if (v is! int && v is! String) _bad(m, 'id', 'an int or a string');
  return v!;
}

_Json _object(_Json m, String field) {
  final v = _need(m, field);
  if (v is! Map<String, Object?>) _bad(m, field, 'an object');
  return v;
}

/// Check a weights object against [classes]: each weight in [0, 1], the sum at most 1.
Weights parseWeights(Object? raw, {List<String> classes = defaultClasses, String where = 'weights'}) {
  if (raw is! Map<String, Object?>) {
    throw ProtocolException('$where must be an object {class: weight}', field: 'weights');
  }
  final out = <String, double>{};
  var sum = 0.0;
  for (final MapEntry(:key, :value) in raw.entries) {
    if (!classes.contains(key)) {
      throw ProtocolException("$where: unknown viseme class '$key'", field: 'weights');
    }
    if (value is! num || value < 0 || value > 1) {
      throw ProtocolException("$where: weight of '$key' must be in [0, 1], got $value",
          field: 'weights');
    }
    out[key] = value.toDouble();
    sum += value;
  }
  if (sum > 1 + 1e-3) {
    throw ProtocolException('$where: weights sum to ${sum.toStringAsFixed(4)}, more than 1',
        field: 'weights');
  }
  return out;
}

Map<String, Object?> _decodeObject(String text, String side) {
  final Object? raw;
  try {
    raw = jsonDecode(text);
  } on FormatException catch (e) {
    throw ProtocolException('$side text frame is not JSON: ${e.message}');
  }
  if (raw is! Map<String, Object?>) {
    throw ProtocolException('$side text frame must be a JSON object');
  }
  if (raw['type'] is! String) {
    throw ProtocolException("$side message lacks a string 'type'", field: 'type');
  }
  return raw;
}

// --------------------------------------------------------------------------- server → client

/// One frame of a viseme track: where it sits on the utterance's audio timeline and its weights.
@immutable
class VisemeFrame {
  const VisemeFrame(this.ptsMs, this.weights);

  final double ptsMs;
  final Weights weights;

  Map<String, Object?> toJson() => <String, Object?>{'pts_ms': ptsMs, 'weights': weights};
}

/// A JSON message from the server. Unknown fields are ignored (servers may add optional ones).
@immutable
sealed class ServerMessage {
  const ServerMessage();

  /// Decode and validate one server message; [classes] are the session's viseme classes.
  factory ServerMessage.fromJson(Map<String, Object?> json,
      {List<String> classes = defaultClasses}) {
    return switch (json['type']) {
      'hello' => Hello.fromJson(json),
      'utterance_start' => UtteranceStart.fromJson(json),
      'viseme' => VisemeMessage.fromJson(json, classes: classes),
      'visemes' => VisemesMessage.fromJson(json, classes: classes),
      'utterance_end' => UtteranceEnd.fromJson(json),
      'stop' => StopMessage.fromJson(json),
      'error' => ErrorMessage.fromJson(json),
      'pong' => Pong.fromJson(json),
      final Object? other =>
        throw ProtocolException("unknown server message type '$other'", field: 'type'),
    };
  }

  /// Decode a text frame.
  static ServerMessage decode(String text, {List<String> classes = defaultClasses}) =>
      ServerMessage.fromJson(_decodeObject(text, 'server'), classes: classes);

  /// The message's `type` on the wire.
  String get type;
}

/// `hello`: the first message after connecting (and after a resume).
final class Hello extends ServerMessage {
  const Hello({
    required this.sessionId,
    required this.fps,
    required this.classes,
    required this.sampleRate,
    required this.lipsync,
    required this.serverTimeMs,
    this.visemeEvents = 'batched',
    this.leadMs = 0,
    this.resumed = false,
  });

  factory Hello.fromJson(Map<String, Object?> m) {
    if (m['protocol'] != protocolVersion) _bad(m, 'protocol', '$protocolVersion');
    final audio = _object(m, 'audio');
    final format = audio['format'] ?? 's16le';
    final channels = audio['channels'] ?? 1;
    final rate = audio['sample_rate'];
    if (format != 's16le' || channels != 1 || rate is! int || rate <= 0) {
      _bad(m, 'audio', '{format: "s16le", sample_rate, channels: 1}');
    }
    final classes = _need(m, 'classes');
    if (classes is! List<Object?> || classes.any((c) => c is! String)) {
      _bad(m, 'classes', 'a list of class names');
    }
    final events = m['viseme_events'] ?? 'batched';
    if (events != 'batched' && events != 'single' && events != 'inline') {
      _bad(m, 'viseme_events', '"batched", "single" or "inline"');
    }
    return Hello(
      sessionId: _string(m, 'session_id'),
      fps: _number(m, 'fps', min: 1e-9),
      classes: List<String>.unmodifiable(classes.cast<String>()),
      sampleRate: rate,
      lipsync: Map<String, Object?>.unmodifiable(_object(m, 'lipsync')),
      serverTimeMs: _number(m, 'server_time_ms'),
      visemeEvents: events as String,
      leadMs: _optNumber(m, 'lead_ms') ?? 0,
      resumed: _optBool(m, 'resumed') ?? false,
    );
  }

  final String sessionId;
  final double fps;
  final List<String> classes;
  final int sampleRate;

  /// `{type, ...asset urls, roi}`: the avatar's lipsync assets.
  final Map<String, Object?> lipsync;
  final double serverTimeMs;
  final String visemeEvents;
  final double leadMs;
  final bool resumed;

  @override
  String get type => 'hello';
}

/// `utterance_start`: before the first audio of an utterance.
final class UtteranceStart extends ServerMessage {
  const UtteranceStart(
      {required this.utterance, required this.sampleRate, this.text, this.serverTimeMs});

  factory UtteranceStart.fromJson(Map<String, Object?> m) => UtteranceStart(
        utterance: _int(m, 'utterance', min: 1),
        sampleRate: _int(m, 'sample_rate', min: 1),
        text: _optString(m, 'text'),
        serverTimeMs: _optNumber(m, 'server_time_ms'),
      );

  final int utterance;
  final int sampleRate;
  final String? text;

  /// The server's clock when it sent this (with [ClockSync], the one-way delay to here).
  final double? serverTimeMs;

  @override
  String get type => 'utterance_start';
}

/// `viseme`: one frame (the contract's single-frame form).
final class VisemeMessage extends ServerMessage {
  const VisemeMessage({required this.utterance, required this.frame});

  factory VisemeMessage.fromJson(Map<String, Object?> m,
          {List<String> classes = defaultClasses}) =>
      VisemeMessage(
        utterance: _int(m, 'utterance', min: 1),
        frame: VisemeFrame(_number(m, 'pts_ms', min: 0),
            parseWeights(_need(m, 'weights'), classes: classes)),
      );

  final int utterance;
  final VisemeFrame frame;

  @override
  String get type => 'viseme';
}

/// `visemes`: the frames that became final with one audio chunk, strictly increasing pts; or,
/// with [provisional], the server's guess at frames not final yet (the start of an utterance),
/// which later frames with the same pts replace.
final class VisemesMessage extends ServerMessage {
  const VisemesMessage({required this.utterance, required this.frames, this.provisional = false});

  factory VisemesMessage.fromJson(Map<String, Object?> m,
      {List<String> classes = defaultClasses}) {
    final raw = _need(m, 'frames');
    if (raw is! List<Object?> || raw.isEmpty) _bad(m, 'frames', 'a non-empty list');
    final frames = <VisemeFrame>[];
    var last = double.negativeInfinity;
    for (final (i, f) in raw.indexed) {
      if (f is! Map<String, Object?>) _bad(m, 'frames', 'a list of {pts_ms, weights}');
      final pts = f['pts_ms'];
      if (pts is! num || pts < 0) {
        throw ProtocolException("'visemes' frame $i needs a pts_ms >= 0", field: 'frames');
      }
      if (pts <= last) {
        throw ProtocolException(
            "'visemes' frames must have strictly increasing pts_ms (frame $i: $pts)",
            field: 'frames');
      }
      last = pts.toDouble();
      frames.add(VisemeFrame(last, parseWeights(f['weights'], classes: classes, where: 'frame $i')));
    }
    final provisional = m['provisional'] ?? false;
    if (provisional is! bool) _bad(m, 'provisional', 'true or false');
    return VisemesMessage(
        utterance: _int(m, 'utterance', min: 1), frames: frames, provisional: provisional);
  }

  final int utterance;
  final List<VisemeFrame> frames;
  final bool provisional;

  @override
  String get type => 'visemes';
}

/// Why an utterance ended.
enum EndReason { done, stopped, error }

/// `utterance_end`: after the last audio and frames of an utterance that finished.
final class UtteranceEnd extends ServerMessage {
  const UtteranceEnd({required this.utterance, required this.durationMs, this.reason = EndReason.done});

  factory UtteranceEnd.fromJson(Map<String, Object?> m) {
    final reason = m['reason'] ?? 'done';
    final parsed = EndReason.values.where((r) => r.name == reason).firstOrNull;
    if (parsed == null) _bad(m, 'reason', '"done", "stopped" or "error"');
    return UtteranceEnd(
      utterance: _int(m, 'utterance', min: 1),
      durationMs: _number(m, 'duration_ms', min: 0),
      reason: parsed,
    );
  }

  final int utterance;
  final double durationMs;
  final EndReason reason;

  @override
  String get type => 'utterance_end';
}

/// `stop`: barge-in; fade the audio and ramp the mouth to Rest over [rampMs].
final class StopMessage extends ServerMessage {
  const StopMessage({
    required this.utterance,
    required this.atPtsMs,
    required this.rampMs,
    this.reason,
  });

  factory StopMessage.fromJson(Map<String, Object?> m) => StopMessage(
        utterance: _int(m, 'utterance', min: 0),
        atPtsMs: _number(m, 'at_pts_ms', min: 0),
        rampMs: _number(m, 'ramp_ms', min: 100, max: 200),
        reason: _optString(m, 'reason'),
      );

  /// The utterance to stop; 0 if none was ever started.
  final int utterance;
  final double atPtsMs;
  final double rampMs;
  final String? reason;

  @override
  String get type => 'stop';
}

/// `error`: a failure the client should know about; the session stays usable.
final class ErrorMessage extends ServerMessage {
  const ErrorMessage({required this.code, required this.message, this.utterance});

  factory ErrorMessage.fromJson(Map<String, Object?> m) => ErrorMessage(
        code: _string(m, 'code', nonEmpty: true),
        message: _string(m, 'message', nonEmpty: true),
        utterance: m['utterance'] == null ? null : _int(m, 'utterance'),
      );

  final String code;
  final String message;
  final int? utterance;

  @override
  String get type => 'error';
}

/// `pong`: the answer to a [Ping], with the server's clock.
final class Pong extends ServerMessage {
  const Pong({required this.id, required this.clientTimeMs, required this.serverTimeMs});

  factory Pong.fromJson(Map<String, Object?> m) => Pong(
        id: _id(m),
        clientTimeMs: _number(m, 'client_time_ms'),
        serverTimeMs: _number(m, 'server_time_ms'),
      );

  final Object id;
  final double clientTimeMs;
  final double serverTimeMs;

  @override
  String get type => 'pong';
}

// --------------------------------------------------------------------------- client → server

/// A JSON message to the server. Client messages are strict: no unknown fields.
@immutable
sealed class ClientMessage {
  const ClientMessage();

  /// Decode and validate a client message (the server's view; used by tests and tools).
  factory ClientMessage.fromJson(Map<String, Object?> json) {
    final message = switch (json['type']) {
      'ping' => Ping(id: _id(json), clientTimeMs: _number(json, 'client_time_ms')),
      'speak' => Speak(_string(json, 'text', nonEmpty: true),
          bargeIn: _optBool(json, 'barge_in') ?? false),
      'text_delta' => TextDelta(_string(json, 'delta')),
      'text_end' => const TextEnd(),
      'stop' => const StopRequest(),
      'audio_start' => AudioStart(
          text: _optString(json, 'text'),
          language: _optString(json, 'language'),
          bargeIn: _optBool(json, 'barge_in') ?? false),
      'audio_end' => const AudioEnd(),
      final Object? other =>
        throw ProtocolException("unknown client message type '$other'", field: 'type'),
    };
    for (final key in json.keys) {
      if (key != 'type' && !message.fields.contains(key)) {
        throw ProtocolException("'${message.type}' message has an unknown field '$key'",
            field: key);
      }
    }
    return message;
  }

  /// Decode a text frame.
  static ClientMessage decode(String text) => ClientMessage.fromJson(_decodeObject(text, 'client'));

  String get type;

  /// The fields (besides `type`) this message may carry.
  List<String> get fields;

  Map<String, Object?> toJson();

  /// The text frame to send.
  String encode() => jsonEncode(toJson());
}

/// `ping`: answered by [Pong].
final class Ping extends ClientMessage {
  const Ping({required this.id, required this.clientTimeMs});

  final Object id;
  final double clientTimeMs;

  @override
  String get type => 'ping';
  @override
  List<String> get fields => const <String>['id', 'client_time_ms'];
  @override
  Map<String, Object?> toJson() =>
      <String, Object?>{'type': type, 'id': id, 'client_time_ms': clientTimeMs};
}

/// `speak`: queue (or, with [bargeIn], replace) an utterance.
final class Speak extends ClientMessage {
  const Speak(this.text, {this.bargeIn = false});

  final String text;
  final bool bargeIn;

  @override
  String get type => 'speak';
  @override
  List<String> get fields => const <String>['text', 'barge_in'];
  @override
  Map<String, Object?> toJson() =>
      <String, Object?>{'type': type, 'text': text, 'barge_in': bargeIn};
}

/// `text_delta`: stream text (e.g. LLM tokens) into the current turn.
final class TextDelta extends ClientMessage {
  const TextDelta(this.delta);

  final String delta;

  @override
  String get type => 'text_delta';
  @override
  List<String> get fields => const <String>['delta'];
  @override
  Map<String, Object?> toJson() => <String, Object?>{'type': type, 'delta': delta};
}

/// `text_end`: the streamed turn is complete.
final class TextEnd extends ClientMessage {
  const TextEnd();

  @override
  String get type => 'text_end';
  @override
  List<String> get fields => const <String>[];
  @override
  Map<String, Object?> toJson() => <String, Object?>{'type': type};
}

/// `stop`: barge-in; stop the current utterance and drop the queue.
final class StopRequest extends ClientMessage {
  const StopRequest();

  @override
  String get type => 'stop';
  @override
  List<String> get fields => const <String>[];
  @override
  Map<String, Object?> toJson() => <String, Object?>{'type': type};
}

/// `audio_start`: a streamed recording follows as binary frames of s16le PCM at the
/// session's `audio.sample_rate`, spoken as it arrives, until [AudioEnd].
final class AudioStart extends ClientMessage {
  const AudioStart({this.text, this.language, this.bargeIn = false});

  final String? text;
  final String? language;
  final bool bargeIn;

  @override
  String get type => 'audio_start';
  @override
  List<String> get fields => const <String>['text', 'language', 'barge_in'];
  @override
  Map<String, Object?> toJson() => <String, Object?>{
        'type': type,
        if (text != null) 'text': text,
        if (language != null) 'language': language,
        'barge_in': bargeIn,
      };
}

/// `audio_end`: the streamed recording is complete.
final class AudioEnd extends ClientMessage {
  const AudioEnd();

  @override
  String get type => 'audio_end';
  @override
  List<String> get fields => const <String>[];
  @override
  Map<String, Object?> toJson() => <String, Object?>{'type': type};
}

// --------------------------------------------------------------------------- binary frames

/// A binary frame: the 16-byte little-endian header and its payload.
@immutable
class BinaryFrame {
  const BinaryFrame({
    required this.kind,
    required this.utterance,
    required this.ptsMs,
    required this.payload,
    this.version = protocolVersion,
    this.flags = 0,
    this.visemesJson,
  });

  /// Decode a frame; throws [ProtocolException] if it is malformed.
  factory BinaryFrame.decode(Uint8List bytes) {
    if (bytes.lengthInBytes < headerBytes) {
      throw ProtocolException('binary frame of ${bytes.lengthInBytes} bytes is shorter than '
          'the $headerBytes-byte header');
    }
    final view = ByteData.sublistView(bytes);
    final kind = view.getUint8(0);
    final version = view.getUint8(1);
    if (version != protocolVersion) {
      throw ProtocolException('binary frame version $version, expected $protocolVersion');
    }
    if (kind != kindAudio && kind != kindPatch && kind != kindAudioVisemes) {
      throw ProtocolException(
          'binary frame kind $kind is unknown (1 = audio, 2 = patch, 3 = audio with visemes)');
    }
    var start = headerBytes;
    String? visemesJson;
    if (kind == kindAudioVisemes) {
      if (bytes.lengthInBytes < headerBytes + 4) {
        throw const ProtocolException(
            'audio+visemes frame is shorter than its 4-byte event length');
      }
      final n = view.getUint32(headerBytes, Endian.little);
      start = headerBytes + 4 + n;
      if (start > bytes.lengthInBytes) {
        throw ProtocolException("audio+visemes event of $n bytes runs past the frame's end");
      }
      try {
        visemesJson = utf8.decode(Uint8List.sublistView(bytes, headerBytes + 4, start));
      } on FormatException {
        throw const ProtocolException('audio+visemes event is not UTF-8');
      }
    }
    final payload = Uint8List.sublistView(bytes, start);
    if (kind != kindPatch && payload.lengthInBytes.isOdd) {
      throw ProtocolException(
          'audio payload of ${payload.lengthInBytes} bytes is not whole s16 samples');
    }
    return BinaryFrame(
      kind: kind,
      version: version,
      flags: view.getUint16(2, Endian.little),
      utterance: view.getUint32(4, Endian.little),
      ptsMs: view.getFloat64(8, Endian.little),
      payload: payload,
      visemesJson: visemesJson,
    );
  }

  final int kind;
  final int version;
  final int flags;
  final int utterance;

  /// Where the payload starts on the utterance's audio timeline.
  final double ptsMs;

  /// The PCM (audio, kind 1 and 3) or the patch (kind 2).
  final Uint8List payload;

  /// Kind 3: the `visemes` event that rides in front of the audio (decode it with
  /// [ServerMessage.decode]); null otherwise.
  final String? visemesJson;

  bool get isAudio => kind == kindAudio || kind == kindAudioVisemes;

  /// The payload as mono s16le samples (a copy, so alignment never matters).
  Int16List samples() {
    final view = ByteData.sublistView(payload);
    final out = Int16List(payload.lengthInBytes ~/ 2);
    for (var i = 0; i < out.length; i++) {
      out[i] = view.getInt16(2 * i, Endian.little);
    }
    return out;
  }

  /// The frame's bytes (header, the visemes event for kind 3, payload).
  Uint8List encode() {
    final event = visemesJson == null ? null : utf8.encode(visemesJson!);
    final front = event == null ? 0 : 4 + event.length;
    final out = Uint8List(headerBytes + front + payload.lengthInBytes);
    final view = ByteData.sublistView(out)
      ..setUint8(0, kind)
      ..setUint8(1, version)
      ..setUint16(2, flags, Endian.little)
      ..setUint32(4, utterance, Endian.little)
      ..setFloat64(8, ptsMs, Endian.little);
    if (event != null) {
      view.setUint32(headerBytes, event.length, Endian.little);
      out.setRange(headerBytes + 4, headerBytes + front, event);
    }
    out.setRange(headerBytes + front, out.length, payload);
    return out;
  }
}

// --------------------------------------------------------------------------- mouth patches

/// Size of a mouth-patch header (kind 2, variant C): the common 16 bytes plus 16 more.
const int patchHeaderBytes = 32;

/// Image format codes of a mouth patch.
const Map<int, String> patchFormats = <int, String>{1: 'jpeg', 2: 'webp', 3: 'png'};

/// A mouth patch (variant C): the server-rendered image of one video frame's mouth, the size
/// of the avatar's ROI, in photo pixels (docs/protocol.md, "Mouth patches").
@immutable
class PatchFrame {
  const PatchFrame({
    required this.utterance,
    required this.ptsMs,
    required this.idleIndex,
    required this.x,
    required this.y,
    required this.w,
    required this.h,
    required this.format,
    required this.image,
  });

  /// Decode a kind-2 frame; throws [ProtocolException] if it is malformed.
  factory PatchFrame.decode(Uint8List bytes) {
    if (bytes.lengthInBytes < patchHeaderBytes) {
      throw ProtocolException('mouth-patch frame of ${bytes.lengthInBytes} bytes is shorter '
          'than its $patchHeaderBytes-byte header');
    }
    final view = ByteData.sublistView(bytes);
    final kind = view.getUint8(0);
    if (kind != kindPatch) {
      throw ProtocolException('binary frame kind $kind is not a mouth patch ($kindPatch)');
    }
    final version = view.getUint8(1);
    if (version != protocolVersion) {
      throw ProtocolException('mouth-patch frame version $version, expected $protocolVersion');
    }
    final code = view.getUint8(28);
    final format = patchFormats[code];
    if (format == null) {
      throw ProtocolException(
          'mouth-patch image format $code is unknown (1 = JPEG, 2 = WebP, 3 = PNG)');
    }
    final w = view.getUint16(24, Endian.little);
    final h = view.getUint16(26, Endian.little);
    if (w < 1 || h < 1) {
      throw ProtocolException('mouth-patch box of $w×$h pixels is empty');
    }
    if (bytes.lengthInBytes == patchHeaderBytes) {
      throw const ProtocolException('mouth-patch frame carries no image');
    }
    return PatchFrame(
      utterance: view.getUint32(4, Endian.little),
      ptsMs: view.getFloat64(8, Endian.little),
      idleIndex: view.getUint32(16, Endian.little),
      x: view.getUint16(20, Endian.little),
      y: view.getUint16(22, Endian.little),
      w: w,
      h: h,
      format: format,
      image: Uint8List.sublistView(bytes, patchHeaderBytes),
    );
  }

  final int utterance;

  /// The frame's time on the utterance's audio timeline.
  final double ptsMs;

  /// The idle-loop frame the server rendered it for (a live client places it by the frame it
  /// shows).
  final int idleIndex;

  /// The box in photo pixels (the avatar's ROI).
  final int x;
  final int y;
  final int w;
  final int h;

  /// 'jpeg', 'webp' or 'png'.
  final String format;

  /// The encoded image.
  final Uint8List image;
}
