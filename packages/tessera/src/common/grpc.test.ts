import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import * as grpc from '@grpc/grpc-js';
import { grpcErrorText } from './grpc.js';

describe('grpcErrorText', () => {
  it('says what a real failed call says, without grpc-js’s empty "Resolution note" tail', async () => {
    // A real call to a port nobody listens on: grpc-js's own UNAVAILABLE error.
    const client = new grpc.Client('127.0.0.1:1', grpc.credentials.createInsecure());
    const err = await new Promise<grpc.ServiceError>((resolve) =>
      client.makeUnaryRequest(
        '/x.Y/Z',
        (b: Buffer) => b,
        (b: Buffer) => b,
        Buffer.alloc(0),
        { deadline: Date.now() + 5000 },
        (e) => resolve(e as grpc.ServiceError),
      ),
    );
    client.close();
    assert.equal(err.code, grpc.status.UNAVAILABLE);
    const text = grpcErrorText(err);
    assert.match(text, /ECONNREFUSED/);
    assert.doesNotMatch(text, /Resolution note/);
    assert.equal(grpcErrorText({ details: 'entry: no entry with ID "x"' }), 'entry: no entry with ID "x"');
    assert.equal(grpcErrorText(new Error('plain')), 'plain');
  });
});
