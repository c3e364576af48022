/**
 * JSON as the Python side writes and reads it (docs/protocol.md section 1).
 *
 * `dumps` writes `json.dumps(doc, sort_keys=True, separators=(",", ":"))`: keys sorted at
 * every level, no whitespace, non-ASCII as \uXXXX, BigInt and Number integers as
 * integers, and `pyFloat(x)` values in Python's float repr ("1.0", "1e-05").
 * `loads` parses integers to BigInt (the seed is up to 2^62) and other numbers to Number,
 * so a reader can tell 12 from 12.0 as Python does; NaN and Infinity are read as Python
 * reads them.
 */
export class PyFloat {
  constructor(value) { this.value = Number(value); }
}

export const pyFloat = (value) => new PyFloat(value);

/** Python's repr of a finite binary64. */
export function formatFloat(x) {
  if (Number.isNaN(x)) return 'NaN';
  if (x === Infinity) return 'Infinity';
  if (x === -Infinity) return '-Infinity';
  if (x === 0) return Object.is(x, -0) ? '-0.0' : '0.0';
  const sign = x < 0 ? '-' : '';
  const [mantissa, expText] = Math.abs(x).toExponential().split('e');
  const exp = Number(expText);
  const digits = mantissa.replace('.', '');
  if (exp >= -4 && exp < 16) {
    if (exp < 0) return `${sign}0.${'0'.repeat(-exp - 1)}${digits}`;
    if (digits.length <= exp + 1) return `${sign}${digits}${'0'.repeat(exp + 1 - digits.length)}.0`;
    return `${sign}${digits.slice(0, exp + 1)}.${digits.slice(exp + 1)}`;
  }
  const m = digits.length > 1 ? `${digits[0]}.${digits.slice(1)}` : digits;
  return `${sign}${m}e${exp < 0 ? '-' : '+'}${String(Math.abs(exp)).padStart(2, '0')}`;
}

function quote(s) {
  let out = '"';
  for (const ch of s) {
    const c = ch.codePointAt(0);
    if (ch === '"') out += '\\"';
    else if (ch === '\\') out += '\\\\';
    else if (ch === '\n') out += '\\n';
    else if (ch === '\r') out += '\\r';
    else if (ch === '\t') out += '\\t';
    else if (ch === '\b') out += '\\b';
    else if (ch === '\f') out += '\\f';
    else if (c < 0x20 || c > 0x7e) {
      if (c > 0xffff) {  // a surrogate pair, as Python escapes it
        const v = c - 0x10000;
        out += `\\u${(0xd800 + (v >> 10)).toString(16).padStart(4, '0')}`;
        out += `\\u${(0xdc00 + (v & 0x3ff)).toString(16).padStart(4, '0')}`;
      } else {
        out += `\\u${c.toString(16).padStart(4, '0')}`;
      }
    } else out += ch;
  }
  return `${out}"`;
}

function comparePy(a, b) {  // Python sorts str by code point; JS's < compares UTF-16 units
  const x = Array.from(a, (c) => c.codePointAt(0));
  const y = Array.from(b, (c) => c.codePointAt(0));
  for (let i = 0; i < Math.min(x.length, y.length); i++) if (x[i] !== y[i]) return x[i] - y[i];
  return x.length - y.length;
}

export function dumps(value) {
  if (value === null || value === undefined) return 'null';
  if (value === true) return 'true';
  if (value === false) return 'false';
  if (value instanceof PyFloat) return formatFloat(value.value);
  if (typeof value === 'bigint') return value.toString();
  if (typeof value === 'number') {
    if (!Number.isInteger(value)) throw new TypeError(`${value} is not an integer; wrap floats in pyFloat()`);
    return String(value);
  }
  if (typeof value === 'string') return quote(value);
  if (Array.isArray(value)) return `[${value.map(dumps).join(',')}]`;
  const keys = Object.keys(value).sort(comparePy);
  return `{${keys.map((k) => `${quote(k)}:${dumps(value[k])}`).join(',')}}`;
}

/** Parse JSON text; integers become BigInt. Throws SyntaxError. */
export function loads(text) {
  let i = 0;
  const ws = () => { while (i < text.length && ' \t\n\r'.includes(text[i])) i++; };
  const fail = (what) => { throw new SyntaxError(`${what} at character ${i}`); };
  const literal = (word, value) => {
    if (text.startsWith(word, i)) { i += word.length; return value; }
    return fail('unexpected token');
  };
  function string() {
    i++;  // the opening quote
    let out = '';
    for (;;) {
      if (i >= text.length) fail('unterminated string');
      const ch = text[i++];
      if (ch === '"') return out;
      if (ch === '\\') {
        const e = text[i++];
        const simple = { '"': '"', '\\': '\\', '/': '/', b: '\b', f: '\f', n: '\n', r: '\r', t: '\t' };
        if (e in simple) out += simple[e];
        else if (e === 'u') {
          const hex = text.slice(i, i + 4);
          if (!/^[0-9a-fA-F]{4}$/.test(hex)) fail('bad \\u escape');
          out += String.fromCharCode(parseInt(hex, 16));
          i += 4;
        } else fail('bad escape');
      } else if (ch.charCodeAt(0) < 0x20) fail('control character in string');
      else out += ch;
    }
  }
  function number() {
    const m = /^-?(0|[1-9]\d*)(\.\d+)?([eE][+-]?\d+)?/.exec(text.slice(i));
    if (!m) {
      if (text.startsWith('-Infinity', i)) { i += 9; return -Infinity; }
      return fail('bad number');
    }
    i += m[0].length;
    return m[2] === undefined && m[3] === undefined ? BigInt(m[0]) : Number(m[0]);
  }
  function value() {
    ws();
    const ch = text[i];
    if (ch === '{') {
      i++;
      const obj = {};
      ws();
      if (text[i] === '}') { i++; return obj; }
      for (;;) {
        ws();
        if (text[i] !== '"') fail('expected a key');
        const key = string();
        ws();
        if (text[i++] !== ':') fail("expected ':'");
        Object.defineProperty(obj, key, { value: value(), enumerable: true, writable: true, configurable: true });
        ws();
        if (text[i] === ',') { i++; continue; }
        if (text[i] === '}') { i++; return obj; }
        fail("expected ',' or '}'");
      }
    }
    if (ch === '[') {
      i++;
      const arr = [];
      ws();
      if (text[i] === ']') { i++; return arr; }
      for (;;) {
        arr.push(value());
        ws();
        if (text[i] === ',') { i++; continue; }
        if (text[i] === ']') { i++; return arr; }
        fail("expected ',' or ']'");
      }
    }
    if (ch === '"') return string();
    if (ch === 't') return literal('true', true);
    if (ch === 'f') return literal('false', false);
    if (ch === 'n') return literal('null', null);
    if (ch === 'N') return literal('NaN', NaN);
    if (ch === 'I') return literal('Infinity', Infinity);
    return number();
  }
  const out = value();
  ws();
  if (i !== text.length) fail('extra data');
  return out;
}
