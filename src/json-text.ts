/**
 * One linear pass over JSON text (RFC 8259) that finds the first thing we
 * refuse: what JSON.parse would refuse (a syntax error), and what it would
 * silently accept but we do not — nesting deeper or an array longer than a
 * limit, and an object that names a member twice (RFC 8259 §4: names SHOULD be
 * unique; JSON.parse keeps the last one, so two readings would become one
 * without a word).
 *
 * Pure, iterative (no recursion, so depth costs no stack), and it reports a
 * position and a kind, never the text: JSON.parse's own messages quote the
 * payload (`Unexpected token 'M', "{"mrn": MRN-99812}" is not valid JSON`), and
 * payload text must not reach a log or a dead-letter reason.
 */

export type JsonProblemKind =
  | 'byte-order-mark'
  | 'unexpected-character'
  | 'unexpected-end'
  | 'invalid-escape'
  | 'control-character'
  | 'invalid-number'
  | 'trailing-characters'
  | 'too-deep'
  | 'array-too-long'
  | 'duplicate-name';

export interface JsonProblem {
  readonly kind: JsonProblemKind;
  /** UTF-16 offset of the first character concerned. */
  readonly offset: number;
  /** 1-based line and column of that character. */
  readonly line: number;
  readonly column: number;
}

export interface JsonScanLimits {
  /** Deepest nesting of objects and arrays accepted (default: unlimited). */
  readonly maxDepth?: number;
  /** Most elements in one array (default: unlimited). */
  readonly maxArrayLength?: number;
  /** Refuse an object naming a member twice (default: true). */
  readonly uniqueNames?: boolean;
}

interface Container {
  readonly array: boolean;
  elements: number;
  names?: Set<string>;
}

const SYNTAX_TEXT: Readonly<Record<JsonProblemKind, string>> = {
  'byte-order-mark': 'it starts with a byte order mark (RFC 8259 §8.1)',
  'unexpected-character': 'an unexpected character',
  'unexpected-end': 'it ends before the JSON value does',
  'invalid-escape': 'an invalid escape sequence in a string',
  'control-character': 'an unescaped control character in a string',
  'invalid-number': 'a malformed number',
  'trailing-characters': 'more text after the JSON value',
  'too-deep': 'nesting deeper than the limit',
  'array-too-long': 'an array longer than the limit',
  'duplicate-name': 'an object that names the same member twice',
};

/** Where the problem is, as people count: "line 1, column 9". */
export function positionOf(p: JsonProblem): string {
  return `line ${p.line}, column ${p.column}`;
}

/** Our own words for a problem: its kind and position, never the text around it. */
export function describeJsonProblem(p: JsonProblem): string {
  return p.kind === 'byte-order-mark'
    ? `the payload is not valid JSON: ${SYNTAX_TEXT[p.kind]}`
    : `the payload is not valid JSON: ${SYNTAX_TEXT[p.kind]} at ${positionOf(p)}`;
}

function problem(text: string, kind: JsonProblemKind, offset: number): JsonProblem {
  let line = 1;
  let lineStart = 0;
  for (let i = 0; i < offset && i < text.length; i++) {
    if (text.charCodeAt(i) === 0x0a) {
      line++;
      lineStart = i + 1;
    }
  }
  return { kind, offset, line, column: offset - lineStart + 1 };
}

const isDigit = (c: number) => c >= 0x30 && c <= 0x39;
const isHex = (c: number) => isDigit(c) || (c >= 0x41 && c <= 0x46) || (c >= 0x61 && c <= 0x66);

/** The first problem in `text`, or undefined when it is one JSON value within the limits. */
export function scanJson(text: string, limits: JsonScanLimits = {}): JsonProblem | undefined {
  const maxDepth = limits.maxDepth ?? Infinity;
  const maxArrayLength = limits.maxArrayLength ?? Infinity;
  const uniqueNames = limits.uniqueNames ?? true;
  const n = text.length;
  const stack: Container[] = [];
  let i = 0;

  const skipSpace = () => {
    // RFC 8259 §2: ws = space, horizontal tab, line feed, carriage return.
    for (let c = text.charCodeAt(i); c === 0x20 || c === 0x09 || c === 0x0a || c === 0x0d;)
      c = text.charCodeAt(++i);
  };
  /** Scans the string starting at `i` (a quote); returns a problem or moves `i` past it. */
  const scanString = (): JsonProblem | undefined => {
    i++;
    for (;;) {
      if (i >= n) return problem(text, 'unexpected-end', n);
      const c = text.charCodeAt(i);
      if (c === 0x22) {
        i++;
        return undefined;
      }
      if (c < 0x20) return problem(text, 'control-character', i);
      if (c === 0x5c) {
        const e = text.charCodeAt(i + 1);
        if (i + 1 >= n) return problem(text, 'unexpected-end', n);
        if (e === 0x75 /* u */) {
          for (let k = 2; k < 6; k++) {
            if (i + k >= n) return problem(text, 'unexpected-end', n);
            if (!isHex(text.charCodeAt(i + k))) return problem(text, 'invalid-escape', i);
          }
          i += 6;
          continue;
        }
        // " \ / b f n r t
        if (![0x22, 0x5c, 0x2f, 0x62, 0x66, 0x6e, 0x72, 0x74].includes(e))
          return problem(text, 'invalid-escape', i);
        i += 2;
        continue;
      }
      i++;
    }
  };
  /** number = [ minus ] int [ frac ] [ exp ] (RFC 8259 §6). */
  const scanNumber = (): JsonProblem | undefined => {
    const start = i;
    if (text.charCodeAt(i) === 0x2d) i++;
    if (text.charCodeAt(i) === 0x30) i++;
    else if (isDigit(text.charCodeAt(i))) while (isDigit(text.charCodeAt(i))) i++;
    else return problem(text, i >= n ? 'unexpected-end' : 'invalid-number', start);
    if (text.charCodeAt(i) === 0x2e) {
      i++;
      if (!isDigit(text.charCodeAt(i))) return problem(text, 'invalid-number', start);
      while (isDigit(text.charCodeAt(i))) i++;
    }
    if (text.charCodeAt(i) === 0x65 || text.charCodeAt(i) === 0x45) {
      i++;
      if (text.charCodeAt(i) === 0x2b || text.charCodeAt(i) === 0x2d) i++;
      if (!isDigit(text.charCodeAt(i))) return problem(text, 'invalid-number', start);
      while (isDigit(text.charCodeAt(i))) i++;
    }
    return undefined;
  };
  const open = (array: boolean): JsonProblem | undefined => {
    if (stack.length >= maxDepth) return problem(text, 'too-deep', i);
    stack.push({ array, elements: 0 });
    i++;
    return undefined;
  };

  if (text.charCodeAt(0) === 0xfeff) return problem(text, 'byte-order-mark', 0);
  // States: a value is expected, an object member name is expected, or a value just ended.
  let state: 'value' | 'name' | 'after' = 'value';
  for (;;) {
    skipSpace();
    if (state === 'value') {
      if (i >= n) return problem(text, 'unexpected-end', n);
      const c = text.charCodeAt(i);
      let p: JsonProblem | undefined;
      if (c === 0x7b /* { */) {
        p = open(false);
        skipSpace();
        if (!p && text.charCodeAt(i) === 0x7d) {
          stack.pop();
          i++;
        } else if (!p) {
          state = 'name';
          continue;
        }
      } else if (c === 0x5b /* [ */) {
        p = open(true);
        skipSpace();
        if (!p && text.charCodeAt(i) === 0x5d) {
          stack.pop();
          i++;
        } else if (!p) {
          // The first value inside an array counts as its first element.
          const top = stack[stack.length - 1]!;
          top.elements = 1;
          if (top.elements > maxArrayLength) return problem(text, 'array-too-long', i);
          continue;
        }
      } else if (c === 0x22) {
        p = scanString();
      } else if (c === 0x2d || isDigit(c)) {
        p = scanNumber();
      } else {
        const word = c === 0x74 ? 'true' : c === 0x66 ? 'false' : c === 0x6e ? 'null' : '';
        if (word && text.startsWith(word, i)) i += word.length;
        else if (word && word.startsWith(text.slice(i))) p = problem(text, 'unexpected-end', n);
        else p = problem(text, 'unexpected-character', i);
      }
      if (p) return p;
      state = 'after';
      continue;
    }
    if (state === 'name') {
      if (i >= n) return problem(text, 'unexpected-end', n);
      if (text.charCodeAt(i) !== 0x22) return problem(text, 'unexpected-character', i);
      const start = i;
      const p = scanString();
      if (p) return p;
      if (uniqueNames) {
        const raw = text.slice(start + 1, i - 1);
        // An escaped name is decoded first: "a" and "\u0061" are the same name.
        const name = raw.includes('\\') ? (JSON.parse(`"${raw}"`) as string) : raw;
        const top = stack[stack.length - 1]!;
        top.names ??= new Set();
        if (top.names.has(name)) return problem(text, 'duplicate-name', start);
        top.names.add(name);
      }
      skipSpace();
      if (i >= n) return problem(text, 'unexpected-end', n);
      if (text.charCodeAt(i) !== 0x3a /* : */) return problem(text, 'unexpected-character', i);
      i++;
      state = 'value';
      continue;
    }
    // state === 'after'
    const top = stack[stack.length - 1];
    if (!top) return i < n ? problem(text, 'trailing-characters', i) : undefined;
    if (i >= n) return problem(text, 'unexpected-end', n);
    const c = text.charCodeAt(i);
    if (c === 0x2c /* , */) {
      i++;
      if (top.array) {
        top.elements++;
        if (top.elements > maxArrayLength) return problem(text, 'array-too-long', i - 1);
        state = 'value';
      } else {
        state = 'name';
      }
    } else if (c === (top.array ? 0x5d : 0x7d)) {
      stack.pop();
      i++;
    } else {
      return problem(text, 'unexpected-character', i);
    }
  }
}
