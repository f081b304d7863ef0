#!/usr/bin/env python3
"""Checks that the code blocks the docs show are the code the tests compile and run.

A block in README.md or docs/*.md preceded by the line

    <!-- snippet: tests/stability/user_policy.hpp#name -->

must equal, line for line (after removing the common indentation of each), the lines between
`// [snippet name]` and `// [end snippet]` in that file. Each marked region must be shown by some
page, and each page's marker must name a region that exists, so neither side can drift alone.

Usage: check_doc_snippets.py [REPO_ROOT]. Prints every mismatch and exits 1 if there is one."""
import difflib
import pathlib
import re
import sys
import textwrap

MARKER = re.compile(r'^<!--\s*snippet:\s*(\S+)#(\S+)\s*-->\s*$')
FENCE = re.compile(r'^\s*(```|~~~)')
REGION_BEGIN = re.compile(r'^\s*// \[snippet (\S+)\]\s*$')
REGION_END = re.compile(r'^\s*// \[end snippet\]\s*$')


def regions(path):
    """{name: text} of the marked regions of a source file."""
    found, name, lines = {}, None, []
    for number, line in enumerate(path.read_text(encoding='utf-8').split('\n'), 1):
        begin = REGION_BEGIN.match(line)
        if begin:
            if name is not None:
                raise ValueError(f'{path}:{number}: snippet {begin.group(1)} begins inside snippet {name}')
            name, lines = begin.group(1), []
        elif REGION_END.match(line):
            if name is None:
                raise ValueError(f'{path}:{number}: [end snippet] without a [snippet NAME]')
            if name in found:
                raise ValueError(f'{path}:{number}: snippet {name} defined twice')
            found[name] = textwrap.dedent('\n'.join(lines)).strip('\n')
            name = None
        elif name is not None:
            lines.append(line)
    if name is not None:
        raise ValueError(f'{path}: snippet {name} has no [end snippet]')
    return found


def shown_blocks(page):
    """(line, file, name, block text) for each marked code block of a Markdown page."""
    lines = page.read_text(encoding='utf-8').split('\n')
    for index, line in enumerate(lines):
        marker = MARKER.match(line)
        if not marker:
            continue
        start = index + 1
        while start < len(lines) and not lines[start].strip():
            start += 1
        if start >= len(lines) or not FENCE.match(lines[start]):
            yield index + 1, marker.group(1), marker.group(2), None
            continue
        end = start + 1
        while end < len(lines) and not FENCE.match(lines[end]):
            end += 1
        yield index + 1, marker.group(1), marker.group(2), textwrap.dedent('\n'.join(lines[start + 1:end])).strip('\n')


def main():
    root = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else pathlib.Path(__file__).parent.parent).resolve()
    pages = [root / 'README.md'] + sorted((root / 'docs').glob('*.md'))
    problems, shown = [], set()
    cache = {}
    for page in pages:
        for line, file, name, block in shown_blocks(page):
            where = f'{page.relative_to(root)}:{line}'
            source = root / file
            if not source.is_file():
                problems.append(f'{where}: {file} does not exist')
                continue
            if source not in cache:
                try:
                    cache[source] = regions(source)
                except ValueError as e:
                    problems.append(str(e))
                    cache[source] = {}
            if name not in cache[source]:
                problems.append(f'{where}: {file} has no region // [snippet {name}]')
                continue
            shown.add((source, name))
            if block is None:
                problems.append(f'{where}: the snippet marker is not followed by a code block')
            elif block != cache[source][name]:
                diff = difflib.unified_diff(cache[source][name].split('\n'), block.split('\n'),
                                            f'{file}#{name}', where, lineterm='')
                problems.append(f'{where}: the block differs from {file}#{name}:\n' + '\n'.join(diff))
    # Every region in a file some page points at must be shown somewhere.
    for source, found in cache.items():
        for name in found:
            if (source, name) not in shown:
                problems.append(f'{source.relative_to(root)}: region {name} is shown by no page')
    for problem in problems:
        print(problem)
    print(f'{len(shown)} snippets checked, {len(problems)} problems')
    return 1 if problems else 0


if __name__ == '__main__':
    sys.exit(main())
