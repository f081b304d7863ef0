#!/usr/bin/env python3
"""Checks that every relative link in README.md and docs/*.md resolves to a file or folder of the
repository and, for a #fragment into a Markdown file, to one of its headings (GitHub's anchors).

Usage: check_links.py [REPO_ROOT]. Prints each broken link and exits 1 if there is one."""
import functools
import pathlib
import re
import sys

LINK = re.compile(r'!?\[[^\]]*\]\(([^)\s]+)(?:\s+"[^"]*")?\)')
FENCE = re.compile(r'^\s*(```|~~~)')


def prose_lines(text):
    """The lines outside fenced code blocks, with inline code removed (a link there is not one)."""
    fenced = False
    for number, line in enumerate(text.split('\n'), 1):
        if FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            yield number, re.sub(r'`[^`]*`', '', line)


@functools.lru_cache(maxsize=None)
def anchors(path):
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens, -1, -2 on repeats."""
    seen, result = {}, set()
    fenced = False
    for line in path.read_text(encoding='utf-8').split('\n'):
        if FENCE.match(line):
            fenced = not fenced
            continue
        heading = re.match(r'#{1,6}\s+(.*?)\s*#*\s*$', line)
        if fenced or not heading:
            continue
        slug = re.sub(r'[^\w\- ]', '', heading.group(1).lower()).replace(' ', '-')
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        result.add(slug if count == 0 else f'{slug}-{count}')
    return result


def main():
    root = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else pathlib.Path(__file__).parent.parent).resolve()
    pages = [root / 'README.md'] + sorted((root / 'docs').glob('*.md'))
    broken = 0
    for page in pages:
        for number, line in prose_lines(page.read_text(encoding='utf-8')):
            for target in LINK.findall(line):
                if re.match(r'[a-zA-Z][a-zA-Z0-9+.-]*:', target):
                    continue  # http:, https:, mailto:: not checked offline
                path_part, _, fragment = target.partition('#')
                resolved = (page.parent / path_part).resolve() if path_part else page
                problem = None
                if not resolved.exists():
                    problem = 'no such file'
                elif fragment and resolved.suffix == '.md' and fragment not in anchors(resolved):
                    problem = f'no heading #{fragment}'
                if problem:
                    broken += 1
                    print(f'{page.relative_to(root)}:{number}: {target}: {problem}')
    print(f'{len(pages)} pages checked, {broken} broken link(s)')
    return 1 if broken else 0


if __name__ == '__main__':
    sys.exit(main())
