/**
 * What this process runs: the package version, the git commit it was built
 * from, and the Node.js version. Exported as the `iomt_build_info` metric
 * (metrics.ts); `iomt --version` prints the package version.
 *
 * The commit comes from, in order:
 *   1. `build-info.json` beside package.json (`{"commit": "<sha>"}`), written by
 *      the Docker build from its GIT_COMMIT build argument (the image holds no .git);
 *   2. the git checkout the code runs from (.git/HEAD, a worktree's `gitdir:`
 *      file, loose refs and packed-refs), read without running git;
 *   3. otherwise "unknown".
 */
import { readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export interface BuildInfo {
  /** package.json `version`, or "unknown". */
  readonly version: string;
  /** Full git commit id (40 hex digits), or "unknown". */
  readonly commit: string;
  /** `process.version`, e.g. "v20.20.2". */
  readonly node: string;
}

const PACKAGE_NAME = 'iomt-pipeline';
const SHA = /^[0-9a-f]{40}$/;

/** The folder holding our package.json, from src/ or from dist/src/. */
export function packageRoot(from: string = fileURLToPath(import.meta.url)): string | undefined {
  let dir = path.dirname(from);
  for (let i = 0; i < 4; i++) {
    try {
      const pkg = JSON.parse(readFileSync(path.join(dir, 'package.json'), 'utf8')) as {
        name?: string;
      };
      if (pkg.name === PACKAGE_NAME) return dir;
    } catch {
      // no package.json here: one level up
    }
    dir = path.dirname(dir);
  }
  return undefined;
}

/** The package version from package.json, or "unknown". */
export function packageVersion(root: string | undefined = packageRoot()): string {
  if (root === undefined) return 'unknown';
  try {
    const pkg = JSON.parse(readFileSync(path.join(root, 'package.json'), 'utf8')) as {
      version?: string;
    };
    return pkg.version ?? 'unknown';
  } catch {
    return 'unknown';
  }
}

function readText(file: string): string | undefined {
  try {
    return readFileSync(file, 'utf8');
  } catch {
    return undefined;
  }
}

/** The git directory of a checkout: `.git` itself, or where a worktree's `.git` file points. */
function gitDir(root: string): string | undefined {
  const dotGit = path.join(root, '.git');
  try {
    if (statSync(dotGit).isDirectory()) return dotGit;
  } catch {
    return undefined;
  }
  const pointer = /^gitdir:\s*(.+)$/m.exec(readText(dotGit) ?? '')?.[1]?.trim();
  return pointer ? path.resolve(root, pointer) : undefined;
}

/** A worktree keeps HEAD in its own folder and refs in the common one (`commondir`). */
function resolveRef(dir: string, ref: string): string | undefined {
  const common = readText(path.join(dir, 'commondir'))?.trim();
  for (const base of common ? [dir, path.resolve(dir, common)] : [dir]) {
    const loose = readText(path.join(base, ref))?.trim();
    if (loose && SHA.test(loose)) return loose;
    for (const line of (readText(path.join(base, 'packed-refs')) ?? '').split('\n')) {
      const [sha, name] = line.trim().split(' ');
      if (name === ref && sha && SHA.test(sha)) return sha;
    }
  }
  return undefined;
}

function commitFromGit(root: string): string | undefined {
  const dir = gitDir(root);
  if (!dir) return undefined;
  const head = readText(path.join(dir, 'HEAD'))?.trim();
  if (!head) return undefined;
  if (SHA.test(head)) return head; // detached HEAD
  const ref = /^ref:\s*(\S+)$/.exec(head)?.[1];
  return ref ? resolveRef(dir, ref) : undefined;
}

function commitFromFile(root: string): string | undefined {
  try {
    const commit = (
      JSON.parse(readText(path.join(root, 'build-info.json')) ?? 'null') as {
        commit?: unknown;
      } | null
    )?.commit;
    return typeof commit === 'string' && SHA.test(commit) ? commit : undefined;
  } catch {
    return undefined;
  }
}

export function readBuildInfo(root: string | undefined = packageRoot()): BuildInfo {
  const commit = root === undefined ? undefined : (commitFromFile(root) ?? commitFromGit(root));
  return {
    version: packageVersion(root),
    commit: commit ?? 'unknown',
    node: process.version,
  };
}
