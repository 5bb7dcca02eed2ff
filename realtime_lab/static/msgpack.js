// msgpack.js: the MessagePack subset of realtime_lab's binary protocol (docs/protocol.md,
// "Binary protocol"), as a dependency-free ES module.
//
//   import { encode, decode } from "/static/msgpack.js";
//   ws.send(encode({ type: "ping", id: 1 }));           // Uint8Array
//   const msg = decode(new Uint8Array(event.data));      // with ws.binaryType = "arraybuffer"
//
// Values: null, booleans, numbers (integers as int, others as float 64), strings,
// Uint8Array (bin: bytes travel raw), arrays and plain objects with string keys.
// Ext types are refused, as by the server.

const utf8enc = new TextEncoder();
const utf8dec = new TextDecoder("utf-8", { fatal: true });

export function encode(value) {
  const out = [];
  write(value, out);
  let size = 0;
  for (const part of out) size += part.length;
  const buf = new Uint8Array(size);
  let pos = 0;
  for (const part of out) { buf.set(part, pos); pos += part.length; }
  return buf;
}

function head(out, bytes) { out.push(Uint8Array.from(bytes)); }

function sized(out, len, fix, fixMax, c8, c16, c32) {
  if (fix !== null && len <= fixMax) head(out, [fix | len]);
  else if (c8 !== null && len < 0x100) head(out, [c8, len]);
  else if (len < 0x10000) head(out, [c16, len >> 8, len & 0xff]);
  else head(out, [c32, (len >>> 24) & 0xff, (len >> 16) & 0xff, (len >> 8) & 0xff, len & 0xff]);
}

function write(v, out) {
  if (v === null || v === undefined) head(out, [0xc0]);
  else if (v === false) head(out, [0xc2]);
  else if (v === true) head(out, [0xc3]);
  else if (typeof v === "number") writeNumber(v, out);
  else if (typeof v === "string") {
    const bytes = utf8enc.encode(v);
    sized(out, bytes.length, 0xa0, 31, 0xd9, 0xda, 0xdb);
    out.push(bytes);
  } else if (v instanceof Uint8Array || v instanceof ArrayBuffer) {
    const bytes = v instanceof ArrayBuffer ? new Uint8Array(v) : v;
    sized(out, bytes.length, null, 0, 0xc4, 0xc5, 0xc6);
    out.push(bytes);
  } else if (Array.isArray(v)) {
    sized(out, v.length, 0x90, 15, null, 0xdc, 0xdd);
    for (const item of v) write(item, out);
  } else if (typeof v === "object") {
    const keys = Object.keys(v).filter((k) => v[k] !== undefined);
    sized(out, keys.length, 0x80, 15, null, 0xde, 0xdf);
    for (const k of keys) { write(k, out); write(v[k], out); }
  } else throw new TypeError(`cannot encode ${typeof v} in MessagePack`);
}

function writeNumber(n, out) {
  if (Number.isInteger(n) && Math.abs(n) <= Number.MAX_SAFE_INTEGER) {
    if (n >= 0 && n < 128) return head(out, [n]);
    if (n < 0 && n >= -32) return head(out, [n & 0xff]);
    if (n >= 0 && n <= 0xffffffff) {
      return n < 0x10000 ? head(out, [0xcd, n >> 8, n & 0xff])
        : head(out, [0xce, (n >>> 24) & 0xff, (n >> 16) & 0xff, (n >> 8) & 0xff, n & 0xff]);
    }
    if (n < 0 && n >= -0x80000000) {
      const b = new Uint8Array(5); b[0] = 0xd2; new DataView(b.buffer).setInt32(1, n); return out.push(b);
    }
    const b = new Uint8Array(9); b[0] = n < 0 ? 0xd3 : 0xcf;
    const dv = new DataView(b.buffer);
    if (n < 0) dv.setBigInt64(1, BigInt(n)); else dv.setBigUint64(1, BigInt(n));
    return out.push(b);
  }
  if (!Number.isFinite(n)) throw new TypeError("NaN and Infinity are not allowed");
  const b = new Uint8Array(9); b[0] = 0xcb; new DataView(b.buffer).setFloat64(1, n);
  out.push(b);
}

export function decode(bytes) {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  let pos = 0;
  const str = (n) => { const s = utf8dec.decode(bytes.subarray(pos, pos + n)); pos += n; return s; };
  const bin = (n) => { const b = bytes.slice(pos, pos + n); pos += n; return b; };
  const arr = (n) => { const a = new Array(n); for (let i = 0; i < n; i++) a[i] = read(); return a; };
  const map = (n) => {
    const o = {};
    for (let i = 0; i < n; i++) {
      const k = read();
      if (typeof k !== "string") throw new TypeError("map keys must be strings");
      o[k] = read();
    }
    return o;
  };
  const u8 = () => view.getUint8(pos++);
  const u16 = () => { const v = view.getUint16(pos); pos += 2; return v; };
  const u32 = () => { const v = view.getUint32(pos); pos += 4; return v; };
  function read() {
    const b = u8();
    if (b < 0x80) return b;
    if (b < 0x90) return map(b & 0x0f);
    if (b < 0xa0) return arr(b & 0x0f);
    if (b < 0xc0) return str(b & 0x1f);
    if (b >= 0xe0) return b - 0x100;
    switch (b) {
      case 0xc0: return null;
      case 0xc2: return false;
      case 0xc3: return true;
      case 0xc4: return bin(u8());
      case 0xc5: return bin(u16());
      case 0xc6: return bin(u32());
      case 0xca: { const v = view.getFloat32(pos); pos += 4; return v; }
      case 0xcb: { const v = view.getFloat64(pos); pos += 8; return v; }
      case 0xcc: return u8();
      case 0xcd: return u16();
      case 0xce: return u32();
      case 0xcf: { const v = view.getBigUint64(pos); pos += 8; return Number(v); }
      case 0xd0: { const v = view.getInt8(pos); pos += 1; return v; }
      case 0xd1: { const v = view.getInt16(pos); pos += 2; return v; }
      case 0xd2: { const v = view.getInt32(pos); pos += 4; return v; }
      case 0xd3: { const v = view.getBigInt64(pos); pos += 8; return Number(v); }
      case 0xd9: return str(u8());
      case 0xda: return str(u16());
      case 0xdb: return str(u32());
      case 0xdc: return arr(u16());
      case 0xdd: return arr(u32());
      case 0xde: return map(u16());
      case 0xdf: return map(u32());
      default: throw new TypeError(`MessagePack type 0x${b.toString(16)} is not part of the protocol`);
    }
  }
  const value = read();
  if (pos !== bytes.length) throw new TypeError("extra bytes after the MessagePack value");
  return value;
}
