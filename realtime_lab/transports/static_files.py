"""The static files (the browser client and the demo room page), refusing bad paths quietly.

Tornado's ``StaticFileHandler`` passes the decoded URL path to ``os.path``; a NUL
byte (``/static/%00``) makes ``os.path.realpath`` raise ``ValueError``, which
Tornado answers with 500 and an ERROR traceback per request. Here a path with a
NUL or another control character is refused with 400, and any other path the
file system cannot take (``ValueError``, ``OSError``) with 404: both logged
only as the usual one-line access-log warning (docs/security.md, "What is
refused at the edge").
"""

from __future__ import annotations

from tornado.web import HTTPError, StaticFileHandler


def bad_path_character(path: str) -> bool:
    """Whether ``path`` holds a NUL or another ASCII control character."""
    return any(ord(char) < 0x20 or char == "\x7f" for char in path)


class LabStaticFileHandler(StaticFileHandler):
    """``StaticFileHandler`` that answers 400/404 to paths the file system cannot take."""

    def parse_url_path(self, url_path: str) -> str:
        if bad_path_character(url_path):
            raise HTTPError(400, "control character in the path")
        return super().parse_url_path(url_path)

    def validate_absolute_path(self, root: str, absolute_path: str) -> str | None:
        try:
            return super().validate_absolute_path(root, absolute_path)
        except (ValueError, OSError):
            raise HTTPError(404) from None


__all__ = ["LabStaticFileHandler", "bad_path_character"]
