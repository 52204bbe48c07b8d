"""Keyword mining, checking and fallback extraction for KeySeg's ``[KEY]`` token."""
