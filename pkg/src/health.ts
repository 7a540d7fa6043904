/**
 * CheckHealth's details (JSON from the backend) as the two strings Grafana's
 * "Save & test" alert renders: `message` under the title and `verboseMessage`
 * in a collapsible block.
 */
export interface HealthFacts {
  serverVersion?: string;
  replicaSet?: string | null;
  changeStreams?: boolean;
  database?: string;
  rollupCollections?: { present?: string[]; missing?: string[] };
  warnings?: string[];
  [k: string]: unknown;
}

export function healthDetails(
  facts: HealthFacts | undefined | null
): ({ message: string; verboseMessage: string } & HealthFacts) | undefined {
  if (!facts || typeof facts !== 'object' || Object.keys(facts).length === 0) {
    return undefined;
  }
  const lines: string[] = [];
  const summary: string[] = [];
  if (facts.serverVersion) {
    summary.push(`MongoDB ${facts.serverVersion}`);
    lines.push(`Server version: ${facts.serverVersion}`);
  }
  if (facts.replicaSet) {
    summary.push(`replica set ${facts.replicaSet}`);
    lines.push(`Replica set: ${facts.replicaSet}`);
  } else if ('replicaSet' in facts) {
    summary.push('standalone server');
    lines.push('Replica set: none (standalone server)');
  }
  if (facts.changeStreams !== undefined) {
    lines.push(`Change streams (live panels): ${facts.changeStreams ? 'available' : 'not available'}`);
  }
  if (facts.database) {
    summary.push(`database ${facts.database}`);
    lines.push(`Database: ${facts.database}`);
  }
  const present = facts.rollupCollections?.present ?? [];
  const missing = facts.rollupCollections?.missing ?? [];
  if (facts.rollupCollections) {
    lines.push(`Rollup collections present: ${present.length ? present.join(', ') : 'none'}`);
    if (missing.length) {
      lines.push(`Rollup collections missing: ${missing.join(', ')} (mongopulsed creates them as events arrive)`);
    }
  }
  for (const w of facts.warnings ?? []) {
    lines.push(`Warning: ${w}`);
  }
  const message = summary.length ? `${summary.join(', ')}.` : '';
  return { ...facts, message, verboseMessage: lines.join('\n') };
}
