// The avatar's assets and the REST calls that find them (DESIGN.md "Contracts").

import 'dart:convert';
import 'dart:math' as math;
import 'dart:typed_data';
import 'dart:ui' as ui;

import 'package:http/http.dart' as http;
import 'package:meta/meta.dart';

import 'protocol.dart';
import 'renderers.dart';

/// A REST call that failed: what, the HTTP status, and the server's explanation.
class LipcoreApiException implements Exception {
  const LipcoreApiException(this.what, this.status, this.detail);

  final String what;
  final int status;
  final String detail;

  @override
  String toString() => '$what failed (HTTP $status): $detail';
}

/// The mouth region of interest in photo pixels.
@immutable
class Roi {
  const Roi(this.x, this.y, this.w, this.h);

  factory Roi.fromJson(Map<String, Object?> j) =>
      Roi(_n(j['x']), _n(j['y']), _n(j['w']), _n(j['h']));

  final double x;
  final double y;
  final double w;
  final double h;
}

double _n(Object? v) {
  if (v is num) return v.toDouble();
  throw FormatException('expected a number, got $v');
}

/// Per idle frame, the affine photo px → frame px: `[a, b, c, d, e, f]` with
/// `x' = a·x + b·y + c`, `y' = d·x + e·y + f`.
@immutable
class MouthTrack {
  const MouthTrack(this.fps, this.affines);

  factory MouthTrack.fromJson(Map<String, Object?> j) {
    final raw = j['affines'];
    if (raw is! List<Object?> || raw.isEmpty) {
      throw const FormatException('mouth_track.json: affines must be a non-empty list');
    }
    return MouthTrack(_n(j['fps']), <Float64List>[
      for (final a in raw)
        if (a is List<Object?> && a.length == 6)
          Float64List.fromList(<double>[for (final v in a) _n(v)])
        else
          throw FormatException('mouth_track.json: an affine needs 6 numbers, got $a'),
    ]);
  }

  final double fps;
  final List<Float64List> affines;

  /// The affine of idle frame [index], wrapped around the loop.
  Float64List at(int index) => affines[((index % affines.length) + affines.length) % affines.length];
}

/// `atlas.json` of the sprite back end.
@immutable
class AtlasDef {
  const AtlasDef({
    required this.cols,
    required this.rows,
    required this.classes,
    required this.roi,
    required this.mask,
    this.image,
    this.cells = const <String, ui.Rect>{},
  });

  factory AtlasDef.fromJson(Map<String, Object?> j) {
    final grid = j['grid']! as Map<String, Object?>;
    final cells = <String, ui.Rect>{};
    final rawCells = j['cells'];
    if (rawCells is Map<String, Object?>) {
      rawCells.forEach((k, v) {
        final c = v! as Map<String, Object?>;
        cells[k] = ui.Rect.fromLTWH(_n(c['x']), _n(c['y']), _n(c['w']), _n(c['h']));
      });
    }
    return AtlasDef(
      cols: (grid['cols']! as num).toInt(),
      rows: (grid['rows']! as num).toInt(),
      classes: (j['classes']! as List<Object?>).cast<String>(),
      roi: Roi.fromJson(j['roi']! as Map<String, Object?>),
      mask: j['mask'] as String?,
      image: j['image'] as String?,
      cells: cells,
    );
  }

  final int cols;
  final int rows;
  final List<String> classes;
  final Roi roi;
  final String? mask;
  final String? image;
  final Map<String, ui.Rect> cells;

  /// The atlas rectangle of [cls] in an atlas image of [width]×[height].
  ui.Rect cellRect(String cls, int width, int height) {
    final named = cells[cls];
    if (named != null) return named;
    final i = math.max(0, classes.indexOf(cls));
    final cw = width / cols;
    final ch = height / rows;
    return ui.Rect.fromLTWH((i % cols) * cw, (i ~/ cols) * ch, cw, ch);
  }
}

/// `meshdef.json` of the mesh back end: control points over the ROI and per-viseme offsets.
@immutable
class MeshDef {
  const MeshDef({
    required this.cols,
    required this.rows,
    required this.roi,
    required this.targets,
    this.texture,
    this.interior,
    this.mask,
  });

  factory MeshDef.fromJson(Map<String, Object?> j) {
    final grid = j['grid']! as Map<String, Object?>;
    final cols = (grid['cols']! as num).toInt();
    final rows = (grid['rows']! as num).toInt();
    final targets = <String, List<List<double>>>{};
    (j['targets']! as Map<String, Object?>).forEach((cls, raw) {
      final pts = <List<double>>[
        for (final p in raw! as List<Object?>)
          <double>[for (final v in p! as List<Object?>) _n(v)],
      ];
      if (pts.length != cols * rows) {
        throw FormatException(
            'meshdef.json: $cls has ${pts.length} offsets for a ${cols}x$rows grid');
      }
      targets[cls] = pts;
    });
    return MeshDef(
      cols: cols,
      rows: rows,
      roi: Roi.fromJson(j['roi']! as Map<String, Object?>),
      targets: targets,
      texture: (j['texture'] ?? j['image']) as String?,
      interior: j['interior'] as String?,
      mask: j['mask'] as String?,
    );
  }

  final int cols;
  final int rows;
  final Roi roi;
  final Map<String, List<List<double>>> targets;
  final String? texture;
  final String? interior;
  final String? mask;

  int get points => cols * rows;
}

/// The server's description of one avatar (`GET /avatars/{id}`).
@immutable
class AvatarInfo {
  const AvatarInfo({required this.id, required this.idleUrl, required this.lipsync,
      this.usable = true, this.reason});

  factory AvatarInfo.fromJson(Map<String, Object?> j, Uri base) => AvatarInfo(
        id: j['avatar_id']! as String,
        idleUrl: base.resolve(j['idle_url']! as String),
        lipsync: j['lipsync_assets']! as Map<String, Object?>,
        usable: (j['usable'] as bool?) ?? true,
        reason: j['reason'] as String?,
      );

  final String id;
  final Uri idleUrl;
  final Map<String, Object?> lipsync;

  /// Whether the server can open a session with it (its back end installed and able to run).
  final bool usable;

  /// Why not, when it is not [usable].
  final String? reason;

  String get backend => (lipsync['type'] as String?) ?? 'sprites';
}

/// REST client of a lipcore server at [base] (which may carry a mount prefix).
class LipcoreApi {
  LipcoreApi(Uri base, {this.token, http.Client? client})
      : base = base.path.endsWith('/') ? base : base.replace(path: '${base.path}/'),
        _http = client ?? http.Client();

  final Uri base;

  /// A short-lived client token for one avatar or one session, minted by your backend with
  /// the server's API key (`POST /tokens`, docs/server.md "Client tokens"); sent as
  /// `Authorization: Bearer`, never logged. An app never holds the API key itself.
  final String? token;
  final http.Client _http;

  Map<String, String> get _headers => <String, String>{
        if (token != null) 'Authorization': 'Bearer $token',
        'content-type': 'application/json',
      };

  Future<Map<String, Object?>> _json(http.Response r, String what) async {
    final body = r.body.isEmpty ? null : jsonDecode(r.body);
    if (r.statusCode >= 400) {
      final detail = body is Map<String, Object?> ? '${body['detail'] ?? body}' : r.reasonPhrase;
      throw LipcoreApiException(what, r.statusCode, detail ?? '');
    }
    return body! as Map<String, Object?>;
  }

  Future<AvatarInfo> avatar(String id) async {
    final r = await _http.get(base.resolve('avatars/${Uri.encodeComponent(id)}'),
        headers: _headers);
    return AvatarInfo.fromJson(await _json(r, 'loading avatar $id'), base);
  }

  /// `POST /session-2d` → the session's WebSocket URL (a secret: it controls the session).
  Future<Uri> createSession(String avatarId, String voiceId) async {
    final r = await _http.post(base.resolve('session-2d'),
        headers: _headers,
        body: jsonEncode(<String, Object?>{'avatar_id': avatarId, 'voice_id': voiceId}));
    final j = await _json(r, 'creating a session');
    final ws = base.resolve(j['ws_url']! as String);
    return ws.scheme == 'http'
        ? ws.replace(scheme: 'ws')
        : ws.scheme == 'https'
            ? ws.replace(scheme: 'wss')
            : ws;
  }

  Future<Map<String, Object?>> getJson(Uri url) async =>
      _json(await _http.get(url), 'fetching $url');

  Future<ui.Image> getImage(Uri url) async {
    final r = await _http.get(url);
    if (r.statusCode >= 400) throw LipcoreApiException('fetching $url', r.statusCode, '');
    final codec = await ui.instantiateImageCodec(r.bodyBytes);
    return (await codec.getNextFrame()).image;
  }

  void close() => _http.close();
}

/// Everything the overlay needs of an avatar, loaded.
class LoadedAvatar {
  /// Assets already in memory (tests, or an app that bundles an avatar); see [load].
  LoadedAvatar(this.info, this.track, {this.atlas, this.atlasImage, this.mesh,
      this.texture, this.interior, this.mask, this.patchRoi, this.notice})
      : assert(
            (atlas != null && atlasImage != null) ||
                (mesh != null && texture != null) ||
                patchRoi != null ||
                notice != null,
            'a sprites avatar needs atlas + atlasImage, a mesh avatar mesh + texture, an onnx '
            'avatar its ROI, an avatar drawn without a mouth its notice');

  final AvatarInfo info;
  final MouthTrack track;
  final AtlasDef? atlas;
  final ui.Image? atlasImage;
  final MeshDef? mesh;
  final ui.Image? texture;
  final ui.Image? interior;
  final ui.Image? mask;

  /// Variant C (`onnx`): the ROI the server's mouth patches cover (from `lipsync_assets.roi`).
  final Roi? patchRoi;

  /// Set when the mouth is not drawn (a kind this app has no renderer for, or an avatar the
  /// server cannot use): the idle loop plays alone and [AvatarView] shows this.
  final String? notice;

  /// Load [info]'s mouth track and what its kind's renderer needs ([MouthRenderers]).
  static Future<LoadedAvatar> load(LipcoreApi api, AvatarInfo info) async {
    final trackUrl = api.base.resolve((info.lipsync['mouth_track_url'] as String?) ??
        info.idleUrl.resolve('mouth_track.json').toString());
    final track = MouthTrack.fromJson(await api.getJson(trackUrl));
    if (!info.usable) {
      return LoadedAvatar(info, track,
          notice: '${info.reason ?? 'this avatar cannot be used on this server'}: '
              'playing the idle loop without a mouth');
    }
    final renderer = MouthRenderers.of(info.backend);
    if (renderer == null) {
      return LoadedAvatar(info, track,
          notice: 'this app has no renderer for lip-sync kind "${info.backend}": '
              'playing the idle loop without a mouth');
    }
    return renderer.load(api, info, track);
  }

  /// The renderer that paints this avatar's mouth, or null when none does ([notice]).
  MouthRenderer? get renderer => notice == null ? MouthRenderers.of(info.backend) : null;

  Roi get roi =>
      atlas?.roi ??
      mesh?.roi ??
      patchRoi ??
      Roi.fromJson(info.lipsync['roi']! as Map<String, Object?>);

  List<String> get classes => atlas?.classes ?? defaultClasses;
}
