/**
 * iomt_build_info's labels: the package version, and the commit from an
 * image's build-info.json or from the git checkout (a plain clone, a worktree,
 * a packed ref, a detached HEAD), or "unknown" — never a guess.
 */
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { readBuildInfo } from '../../src/build-info.js';
import { createMetrics } from '../../src/metrics.js';

const A = 'a'.repeat(40);
const B = 'b'.repeat(40);
const dirs: string[] = [];

function pkg(extra: Record<string, string> = {}): string {
  const root = mkdtempSync(path.join(tmpdir(), 'iomt-build-info-'));
  dirs.push(root);
  writeFileSync(path.join(root, 'package.json'), '{"name":"iomt-pipeline","version":"9.8.7"}');
  for (const [file, content] of Object.entries(extra)) {
    mkdirSync(path.dirname(path.join(root, file)), { recursive: true });
    writeFileSync(path.join(root, file), content);
  }
  return root;
}

afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

describe('readBuildInfo', () => {
  it('reads the version and a loose ref of a clone', () => {
    const root = pkg({ '.git/HEAD': 'ref: refs/heads/main\n', '.git/refs/heads/main': `${A}\n` });
    expect(readBuildInfo(root)).toEqual({ version: '9.8.7', commit: A, node: process.version });
  });

  it('reads a packed ref and a detached HEAD', () => {
    const packed = pkg({
      '.git/HEAD': 'ref: refs/heads/main\n',
      '.git/packed-refs': `# pack-refs with: peeled\n${B} refs/heads/other\n${A} refs/heads/main\n`,
    });
    expect(readBuildInfo(packed).commit).toBe(A);
    expect(readBuildInfo(pkg({ '.git/HEAD': `${B}\n` })).commit).toBe(B);
  });

  it("follows a worktree's .git file to its HEAD and the common refs", () => {
    const common = pkg({ '.git/refs/heads/wip': `${B}\n` });
    const root = pkg({
      '.git': `gitdir: ${common}/.git/worktrees/w1\n`,
    });
    mkdirSync(path.join(common, '.git/worktrees/w1'), { recursive: true });
    writeFileSync(path.join(common, '.git/worktrees/w1/HEAD'), 'ref: refs/heads/wip\n');
    writeFileSync(path.join(common, '.git/worktrees/w1/commondir'), '../..\n');
    expect(readBuildInfo(root).commit).toBe(B);
  });

  it("prefers an image's build-info.json, and says unknown rather than guess", () => {
    const image = pkg({ 'build-info.json': `{"commit":"${A}"}`, '.git/HEAD': `${B}\n` });
    expect(readBuildInfo(image).commit).toBe(A);
    expect(readBuildInfo(pkg({ 'build-info.json': '{"commit":"unknown"}' })).commit).toBe(
      'unknown',
    );
    expect(readBuildInfo(pkg({ '.git/HEAD': 'ref: refs/heads/gone\n' })).commit).toBe('unknown');
    // No package.json, no checkout.
    const empty = mkdtempSync(path.join(tmpdir(), 'iomt-build-info-'));
    dirs.push(empty);
    expect(readBuildInfo(empty)).toEqual({
      version: 'unknown',
      commit: 'unknown',
      node: process.version,
    });
  });
});

describe('iomt_build_info', () => {
  it('is 1 with the version, commit and Node.js version as labels', async () => {
    const metrics = createMetrics({
      defaultMetrics: false,
      buildInfo: { version: '9.8.7', commit: A, node: 'v22.0.0' },
    });
    const text = await metrics.registry.getSingleMetricAsString('iomt_build_info');
    expect(text).toContain(
      `iomt_build_info{version="9.8.7",commit="${A}",node_version="v22.0.0"} 1`,
    );
  });
});
