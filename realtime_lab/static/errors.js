// errors.js: the errors the browser client raises (docs/client.md).

/** Raised by sends while reconnecting once `bufferSize` messages wait. */
export class SendBufferFull extends Error {}

/** The connection is closed (for good, or before a reply came). */
export class ConnectionClosed extends Error {
  constructor(code, reason) {
    super(`connection closed (code=${code}, reason=${JSON.stringify(reason)})`);
    this.code = code;
    this.reason = reason;
  }
}

/** The server answered a request with an error message. */
export class RequestFailed extends Error {
  constructor(code, message) {
    super(`${code}: ${message}`);
    this.code = code;
  }
}
