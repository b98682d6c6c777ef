/**
 * A readable structural diff of two JSON values: one line per difference,
 * named by its path ("observations[1].valueQuantity.value: expected 72, got 73").
 * Pure; used by `iomt mappings test`.
 */

function show(v: unknown): string {
  if (v === undefined) return '(absent)';
  const s = JSON.stringify(v);
  return s.length > 120 ? `${s.slice(0, 117)}...` : s;
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

export function jsonDiff(
  expected: unknown,
  actual: unknown,
  path = '',
  out: string[] = [],
): string[] {
  if (Array.isArray(expected) && Array.isArray(actual)) {
    const n = Math.max(expected.length, actual.length);
    for (let i = 0; i < n; i++) jsonDiff(expected[i], actual[i], `${path}[${i}]`, out);
    return out;
  }
  if (isObject(expected) && isObject(actual)) {
    const keys = [...new Set([...Object.keys(expected), ...Object.keys(actual)])];
    for (const k of keys) jsonDiff(expected[k], actual[k], path ? `${path}.${k}` : k, out);
    return out;
  }
  if (JSON.stringify(expected) !== JSON.stringify(actual)) {
    out.push(`${path || '(root)'}: expected ${show(expected)}, got ${show(actual)}`);
  }
  return out;
}
