// The shared protocol vectors (tests/vectors/ of the lipcore repository), read from the
// repository next to this package, as `flutter test` runs with the package as its directory.

import 'dart:convert';
import 'dart:io';

/// Directory of the vectors: `$LIPCORE_VECTORS`, else `../tests/vectors`.
Directory vectorsDir() {
  final env = Platform.environment['LIPCORE_VECTORS'];
  return Directory(env ?? '../tests/vectors');
}

Map<String, Object?> loadVector(String name) =>
    jsonDecode(File('${vectorsDir().path}/$name').readAsStringSync()) as Map<String, Object?>;

/// Names of the message vector files (`server.<type>.json`, `client.<type>.json`).
List<String> messageVectorFiles() {
  final names = vectorsDir()
      .listSync()
      .whereType<File>()
      .map((f) => f.uri.pathSegments.last)
      .where((n) => RegExp(r'^(server|client)\..+\.json$').hasMatch(n))
      .toList()
    ..sort();
  return names;
}

List<int> hexBytes(String hex) => <int>[
      for (var i = 0; i < hex.length; i += 2) int.parse(hex.substring(i, i + 2), radix: 16),
    ];
