"""Indexing: the one service that writes the index (service), its planner and pipeline that turn photos into
region vectors and words (indexer), the folder walker (scanner) and the live folder watcher, which only reports
what changed (watcher)."""
