#!/usr/bin/env python3
"""Turns Chinese text into plain Simplified Chinese in the files given (or all tracked text files).

Some editing tools write a simplified character as its traditional form followed by its pinyin,
e.g. "\u7db2(w\u01ceng)" for "\u7f51". The UI must speak Simplified Chinese, so this drops such pinyin
annotations and converts what remains to simplified characters. The frontend's locale test
fails when a zh string still carries either. Needs `pip install opencc-python-reimplemented`.
"""
import re
import subprocess
import sys

import opencc

# A pinyin annotation has a tone mark; "(kWh)" after a character is not one.
ANNOTATED = re.compile(r"([\u3400-\u9fff])\(([a-z\u00e0-\u01dc]*[\u00e0-\u01dc][a-z\u00e0-\u01dc]*)\)")
CJK_RUN = re.compile(r"[\u3400-\u9fff\u3000-\u303f\uff00-\uffef]+")


def normalize(text: str, converter) -> str:
    text = ANNOTATED.sub(lambda m: m.group(1), text)
    return CJK_RUN.sub(lambda m: converter.convert(m.group(0)), text)


def main() -> None:
    converter = opencc.OpenCC("t2s")
    paths = sys.argv[1:] or subprocess.run(
        ["git", "ls-files"], capture_output=True, text=True, check=True
    ).stdout.split()
    for path in paths:
        try:
            with open(path, encoding="utf-8") as f:
                text = f.read()
        except (UnicodeDecodeError, IsADirectoryError, FileNotFoundError):
            continue
        fixed = normalize(text, converter)
        if fixed != text:
            with open(path, "w", encoding="utf-8") as f:
                f.write(fixed)
            print(f"normalized {path}")


if __name__ == "__main__":
    main()
