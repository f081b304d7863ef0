#!/usr/bin/env python3
"""Checks the naming rule of docs/conventions.md on every public type of include/steadyloss:
policy classes (the loss terms, the step policies, the Stabilizer) and concepts are PascalCase,
every other type, enumeration and alias is snake_case. Names in a `detail` namespace are not
public and not checked.

Usage: check_names.py [REPO_ROOT]. Prints each name that breaks the rule and exits 1 if any does."""
import pathlib
import re
import sys

POLICY_CLASSES = {
    # loss terms
    'Huber', 'AdaptiveHuber', 'BalancedBCE', 'LabelSmoothing', 'L1', 'MSE',
    # step policies
    'EmaSmoother', 'SpikeDampener', 'AdaptiveWeight', 'ErrorScale', 'EarlyStopper', 'StabilityMetrics',
    # the pipeline that runs them
    'Stabilizer', 'BasicStabilizer',
}
PASCAL = re.compile(r'^[A-Z][A-Za-z0-9]*$')
SNAKE = re.compile(r'^[a-z][a-z0-9_]*$')
NAMESPACE_OPEN = re.compile(r'^(?:inline\s+)?namespace\s+([\w:]+)?\s*{')
NAMESPACE_CLOSE = re.compile(r'^}\s*//\s*(?:inline\s+)?namespace')
DECLARATION = re.compile(r'^(?:template\s*<.*>\s*)?(struct|class|concept|enum class|enum|using)\s+([A-Za-z_]\w*)')


def public_names(path):
    """(line, kind, name) of the namespace-scope declarations outside any detail namespace."""
    stack = []
    for number, line in enumerate(path.read_text(encoding='utf-8').split('\n'), 1):
        opened = NAMESPACE_OPEN.match(line)
        if opened:
            stack.append(opened.group(1) or '')
            continue
        if NAMESPACE_CLOSE.match(line):
            if stack:
                stack.pop()
            continue
        if any('detail' in part.split('::') for part in stack):
            continue
        declared = DECLARATION.match(line)
        if not declared:
            continue
        kind, name = declared.groups()
        if kind == 'using' and re.match(r'^using\s+namespace', line):
            continue
        # A forward declaration or a definition at namespace scope (not indented), a concept, an
        # alias: all are names users write.
        yield number, kind, name


def main():
    root = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else pathlib.Path(__file__).parent.parent).resolve()
    headers = sorted((root / 'include' / 'steadyloss').rglob('*.hpp'))
    problems, checked = [], set()
    for header in headers:
        for number, kind, name in public_names(header):
            checked.add(name)
            where = f'{header.relative_to(root)}:{number}'
            if kind == 'concept' or name in POLICY_CLASSES:
                if not PASCAL.match(name):
                    problems.append(f'{where}: {kind} {name} should be PascalCase (a policy class or concept)')
            elif not SNAKE.match(name):
                problems.append(f'{where}: {kind} {name} should be snake_case (only policy classes and '
                                f'concepts are PascalCase; docs/conventions.md)')
    missing = sorted(POLICY_CLASSES - checked)
    for name in missing:
        problems.append(f'policy class {name} is listed in check_names.py but declared nowhere')
    for problem in problems:
        print(problem)
    print(f'{len(checked)} public names checked in {len(headers)} headers, {len(problems)} problems')
    return 1 if problems else 0


if __name__ == '__main__':
    sys.exit(main())
