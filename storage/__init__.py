"""Blob store, metadata database and ids: the layer every other package builds on."""
