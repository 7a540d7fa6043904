import { ScopedVars, TypedVariableModel } from '@grafana/data';

/**
 * Just enough of Grafana's TemplateSrv for the tests: `$name`, `${name}` and
 * `${name:format}` references, single- and multi-value variables, scoped vars.
 */
export class FakeTemplateSrv {
  values: Record<string, string | string[]> = {
    country: ['FR', 'DE'],
    device: 'mobile',
    eventType: 'page_view',
    dims: ['country', 'deviceType'],
  };

  getVariables(): TypedVariableModel[] {
    return Object.keys(this.values).map((name) => ({ name, type: 'custom' }) as unknown as TypedVariableModel);
  }

  containsTemplate(target?: string): boolean {
    return !!target && /\$(\w+|\{[^}]+\})/.test(target);
  }

  updateTimeRange() {}

  replace(target?: string, scopedVars?: ScopedVars, format?: string | Function): string {
    if (!target) {
      return target ?? '';
    }
    return target.replace(/\$(\w+)|\$\{(\w+)(?::(\w+))?\}/g, (match, a, b, fmt) => {
      const name = a ?? b;
      const scoped = scopedVars?.[name]?.value;
      const value = scoped !== undefined ? (scoped as string | string[]) : this.values[name];
      if (value === undefined) {
        return match;
      }
      if (typeof format === 'function') {
        return format(value, { name }, fmt);
      }
      if (Array.isArray(value)) {
        return fmt === 'json' || format === 'json' ? JSON.stringify(value) : `{${value.join(',')}}`;
      }
      return String(value);
    });
  }
}
