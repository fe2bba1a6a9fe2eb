// Example: show a lipcore avatar and make it speak.
//
//   flutter run --dart-define=LIPCORE_URL=http://192.168.1.20:8000 \
//               --dart-define=LIPCORE_AVATAR=a_XXXX [--dart-define=LIPCORE_VOICE=en-us]

import 'dart:async';

import 'package:flutter/material.dart';
import 'package:lipcore_client/lipcore_client.dart';

const String _server = String.fromEnvironment('LIPCORE_URL', defaultValue: 'http://127.0.0.1:8000');
const String _avatarId = String.fromEnvironment('LIPCORE_AVATAR');
const String _voice = String.fromEnvironment('LIPCORE_VOICE', defaultValue: 'en-us');
// A client token for the avatar (minted by your backend: POST /tokens with the API key);
// the app never holds the API key.
const String _token = String.fromEnvironment('LIPCORE_TOKEN');

void main() => runApp(const LipcoreExampleApp());

class LipcoreExampleApp extends StatelessWidget {
  const LipcoreExampleApp({super.key});

  @override
  Widget build(BuildContext context) => MaterialApp(
        title: 'lipcore',
        theme: ThemeData(
          colorScheme: ColorScheme.fromSeed(
              seedColor: const Color(0xFFFF7A59), brightness: Brightness.dark),
          useMaterial3: true,
        ),
        home: const TalkPage(),
      );
}

class TalkPage extends StatefulWidget {
  const TalkPage({super.key});

  @override
  State<TalkPage> createState() => _TalkPageState();
}

class _TalkPageState extends State<TalkPage> {
  final TextEditingController _text =
      TextEditingController(text: 'Hello! I am a photo that learned to talk.');
  late final LipcoreApi _api =
      LipcoreApi(Uri.parse(_server), token: _token.isEmpty ? null : _token);
  LoadedAvatar? _avatar;
  LipcoreSession? _session;
  StreamSubscription<SessionEvent>? _events;
  String _status = 'connecting…';
  double? _rttMs;

  @override
  void initState() {
    super.initState();
    unawaited(_start());
  }

  Future<void> _start() async {
    if (_avatarId.isEmpty) {
      setState(() => _status = 'set --dart-define=LIPCORE_AVATAR=<avatar id>');
      return;
    }
    try {
      final info = await _api.avatar(_avatarId);
      final avatar = await LoadedAvatar.load(_api, info);
      // recreate: a session lost with its server (killed or restarted worker) is made again.
      final session = LipcoreSession(await _api.createSession(info.id, _voice),
          recreate: () => _api.createSession(info.id, _voice));
      _events = session.events.listen((e) {
        if (!mounted) return;
        setState(() {
          switch (e.type) {
            case 'pong':
              _rttMs = (e.fields['rtt_ms'] as num?)?.toDouble();
            case 'error':
              _status = 'error: ${e.fields['message']}';
            case 'closed':
              _status = 'disconnected';
          }
        });
      });
      await session.connect();
      setState(() {
        _avatar = avatar;
        _session = session;
        _status = 'live';
      });
    } on Exception catch (e) {
      setState(() => _status = '$e');
    }
  }

  void _speak() {
    final text = _text.text.trim();
    if (text.isEmpty) return;
    final s = _session;
    if (s == null) return;
    s.speak(text, bargeIn: s.isSpeaking);
  }

  @override
  void dispose() {
    unawaited(_events?.cancel());
    unawaited(_session?.close());
    _api.close();
    _text.dispose();
    super.dispose();
  }

  @override
  Widget build(BuildContext context) {
    final avatar = _avatar;
    return Scaffold(
      appBar: AppBar(
        title: const Text('lipcore'),
        actions: <Widget>[
          Center(child: Text(_rttMs == null ? _status : '$_status · ${_rttMs!.round()} ms')),
          const SizedBox(width: 16),
        ],
      ),
      body: Column(
        children: <Widget>[
          Expanded(
            child: avatar == null
                ? Center(child: Text(_status))
                : ClipRRect(
                    borderRadius: BorderRadius.circular(16),
                    child: AvatarView(avatar: avatar, session: _session),
                  ),
          ),
          Padding(
            padding: const EdgeInsets.all(16),
            child: Row(
              children: <Widget>[
                Expanded(
                  child: TextField(
                    controller: _text,
                    onSubmitted: (_) => _speak(),
                    decoration: const InputDecoration(
                        border: OutlineInputBorder(), hintText: 'Say something…'),
                  ),
                ),
                const SizedBox(width: 12),
                FilledButton(onPressed: _speak, child: const Text('Speak')),
                const SizedBox(width: 8),
                OutlinedButton(
                    onPressed: () => _session?.stop(), child: const Text('Interrupt')),
              ],
            ),
          ),
        ],
      ),
    );
  }
}
