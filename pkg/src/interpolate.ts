import { ScopedVars } from '@grafana/data';
import { TemplateSrv } from '@grafana/runtime';

const WHOLE_VARIABLE = /^\s*(\$\w+|\$\{[^}:]+(?::[^}]+)?\}|\[\[[^\]]+\]\])\s*$/;

/**
 * Replaces dashboard variables in a list of values. A value that is exactly
 * one variable reference (`$country`, `${country}`) with several values
 * selected (or "All") becomes all of them; any other value is replaced as text,
 * several values joined with commas.
 */
export function expandValues(srv: TemplateSrv, values: string[], scopedVars?: ScopedVars): string[] {
  const out: string[] = [];
  for (const v of values) {
    if (typeof v !== 'string' || !srv.containsTemplate(v)) {
      out.push(v);
      continue;
    }
    let many: string[] | undefined;
    const replaced = srv.replace(v, scopedVars, (value: unknown) => {
      if (Array.isArray(value)) {
        many = value.map(String);
        return many.join(',');
      }
      return String(value);
    });
    if (many && WHOLE_VARIABLE.test(v)) {
      out.push(...many);
    } else {
      out.push(replaced);
    }
  }
  return out;
}
