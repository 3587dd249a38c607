#!/usr/bin/env python3
"""Fails if the generated docs show an intra-doc link as literal text, such as "[`log`]".

rustdoc resolves a link to a dependency's item (so `-D warnings` has nothing to report), but
with `--no-deps` and no documentation of that dependency next to ours it has no address to
link to, and prints the brackets instead. docs.rs links them; a local `cargo doc --no-deps`
does not. Link to dependencies with an explicit address: [`log`](https://docs.rs/log).

Usage: python3 scripts/check_doc_links.py [target/doc/failfast]
"""
import pathlib
import re
import sys

root = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else "target/doc/failfast")
if not root.is_dir():
    sys.exit(f"{root}: no such directory; run `cargo doc --no-deps --all-features` first")

# Code blocks legitimately hold brackets (arrays, slices, attributes).
CODE = re.compile(r"<pre[^>]*>.*?</pre>", re.S)
# Prose: "[<code>name</code>]" or "[name]" / "[path::Name]" not followed by "(".
BROKEN = re.compile(r"\[<code>[^<]{1,80}</code>\]|\[[A-Za-z_][A-Za-z0-9_]*(?:::[A-Za-z0-9_]+)*\](?!\()")

found = []
for page in sorted(root.rglob("*.html")):
    if page.parent.name == "src" or "/src/" in page.as_posix():
        continue  # rendered source files
    text = CODE.sub("", page.read_text(encoding="utf-8"))
    body = text[text.find("<main"):] if "<main" in text else text
    # Trait implementations show the traits' own docs (std's, futures'): not ours to fix.
    cut = body.find('id="trait-implementations"')
    if cut >= 0:
        body = body[:cut]
    for match in BROKEN.finditer(body):
        found.append(f"{page.relative_to(root)}: {match.group(0)}")

if found:
    print("intra-doc links rendered as text (give them an explicit address):")
    print("\n".join(f"  {line}" for line in found))
    sys.exit(1)
print(f"doc links ok ({root})")
