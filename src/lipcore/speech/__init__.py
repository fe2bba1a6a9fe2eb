"""Speech in, mouth out: everything between a voice and the viseme track.

* ``_espeak``: the ctypes binding of libespeak-ng (speech with phoneme events, G2P);
* ``visemes`` and ``coarticulation``: phonemes → the 12 viseme classes, blended over time;
* ``audio_visemes``: visemes from audio alone (the shipped model, its features and alignment);
* ``audio_input``: recordings in (decode, resample, lead shift);
* ``_synthdata``: labelled espeak-ng speech for training and benchmarks.

The plugins that use them (the espeak TTS source, the default mapper, the audio estimators)
live in :mod:`lipcore.default_plugins`.
"""
