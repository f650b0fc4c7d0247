"""What a worker's output may show a tenant: its last lines (why a job died), without the
operator's file system layout, hosts, buckets or credentials."""

import re

# Order matters: URLs before hosts, hosts before bare addresses.
_RULES = [
    (re.compile(r"\b(?:s3|https?|postgres(?:ql)?(?:\+\w+)?|redis)://\S+"), "<url>"),
    (re.compile(r"\b(?:AKIA|ASIA)[A-Z0-9]{16}\b"), "<key>"),
    (re.compile(r"\bsk-[A-Za-z0-9_-]{8,}"), "<key>"),
    (re.compile(r"\b\d{1,3}(?:\.\d{1,3}){3}(?::\d+)?\b"), "<host>"),
    # An absolute path keeps only its last part: "model.py", not where it is installed.
    (re.compile(r"(?<![\w.<])(?:/[\w.@+-]+)+/([\w.@+-]+)"), r"\1"),
]


def redact(text: str) -> str:
    for pattern, replacement in _RULES:
        text = pattern.sub(replacement, text)
    return text
