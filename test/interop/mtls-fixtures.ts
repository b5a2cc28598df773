/**
 * Identities for the mTLS interop tests: two trust domains, SVIDs for our side and the Go side,
 * and the files the Go peer reads.
 */
import type { X509Certificate } from 'node:crypto';
import { type IssuedSvid, TestCa } from '@tessera/testkit';
import { type GoPeerFiles, writePeerFiles } from './go-peer.js';

export const TD = 'example.org';
export const OTHER_TD = 'other.org';

export interface MtlsFixtures {
  ca: TestCa;
  otherCa: TestCa;
  /** Both trust domains' roots: what every peer trusts unless a test says otherwise. */
  bundles: Record<string, X509Certificate[]>;
  ids: {
    ourServer: string;
    ourClient: string;
    goServer: string;
    goClient: string;
    foreign: string;
    nobody: string;
  };
  svids: {
    ourServer: IssuedSvid;
    ourClient: IssuedSvid;
    /** An other.org SVID, for "peer from the wrong trust domain". */
    foreign: IssuedSvid;
  };
  go: {
    server: GoPeerFiles;
    client: GoPeerFiles;
    /** A Go peer presenting the other.org SVID. */
    foreignServer: GoPeerFiles;
    foreignClient: GoPeerFiles;
    /** A Go peer that trusts only example.org. */
    clientTrustingOnlyOurTd: GoPeerFiles;
  };
}

export async function createMtlsFixtures(dir: string): Promise<MtlsFixtures> {
  const ca = TestCa.create({ trustDomain: TD });
  const otherCa = TestCa.create({ trustDomain: OTHER_TD });
  const ids = {
    ourServer: `spiffe://${TD}/our-server`,
    ourClient: `spiffe://${TD}/our-client`,
    goServer: `spiffe://${TD}/go-server`,
    goClient: `spiffe://${TD}/go-client`,
    foreign: `spiffe://${OTHER_TD}/client`,
    nobody: `spiffe://${TD}/nobody`,
  };
  // The intermediate makes every handshake carry a chain, not just a leaf.
  const intermediate = ca.createIntermediate();
  const svids = {
    ourServer: intermediate.issueX509Svid(ids.ourServer),
    ourClient: ca.issueX509Svid(ids.ourClient),
    foreign: otherCa.issueX509Svid(ids.foreign),
  };
  const both = { [TD]: [ca.root], [OTHER_TD]: [otherCa.root] };
  const goServerSvid = intermediate.issueX509Svid(ids.goServer);
  const goClientSvid = ca.issueX509Svid(ids.goClient);
  return {
    ca,
    otherCa,
    bundles: both,
    ids,
    svids,
    go: {
      server: await writePeerFiles(dir, 'go-server', goServerSvid, both),
      client: await writePeerFiles(dir, 'go-client', goClientSvid, both),
      foreignServer: await writePeerFiles(dir, 'go-foreign-server', svids.foreign, both),
      foreignClient: await writePeerFiles(dir, 'go-foreign-client', svids.foreign, both),
      clientTrustingOnlyOurTd: await writePeerFiles(dir, 'go-client-one-td', goClientSvid, {
        [TD]: [ca.root],
      }),
    },
  };
}
