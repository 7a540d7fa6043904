import { useEffect, useState } from 'react';
import { SelectableValue } from '@grafana/data';
import { getTemplateSrv } from '@grafana/runtime';

import type { DataSource } from '../datasource';
import { Schema } from '../types';

const EMPTY_SCHEMA: Schema = {
  eventTypes: [],
  specs: [],
  dimensions: [],
  metrics: [],
  quantiles: [],
  distinct: [],
  topK: [],
};

export interface Loaded<T> {
  value: T;
  loading: boolean;
  error?: string;
}

/** `GET schema?eventType=`, reloaded when the event type changes. */
export function useSchema(datasource: DataSource, eventType?: string): Loaded<Schema> {
  const [state, setState] = useState<Loaded<Schema>>({ value: EMPTY_SCHEMA, loading: true });
  useEffect(() => {
    let live = true;
    setState((s) => ({ ...s, loading: true }));
    datasource
      .schema(eventType && eventType !== '*' ? eventType : undefined)
      .then((schema) => live && setState({ value: { ...EMPTY_SCHEMA, ...schema }, loading: false }))
      .catch((e) => live && setState({ value: EMPTY_SCHEMA, loading: false, error: errorText(e) }));
    return () => {
      live = false;
    };
  }, [datasource, eventType]);
  return state;
}

/** Any string list endpoint (event types, dimensions), reloaded when `key` changes. */
export function useList(load: () => Promise<string[]>, key: string): Loaded<string[]> {
  const [state, setState] = useState<Loaded<string[]>>({ value: [], loading: true });
  useEffect(() => {
    let live = true;
    setState((s) => ({ ...s, loading: true }));
    load()
      .then((value) => live && setState({ value: value ?? [], loading: false }))
      .catch((e) => live && setState({ value: [], loading: false, error: errorText(e) }));
    return () => {
      live = false;
    };
    // `load` closes over `key`'s inputs; `key` is the cache key.
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [key]);
  return state;
}

export function errorText(e: unknown): string {
  if (!e) {
    return 'unknown error';
  }
  const any = e as { data?: { message?: string; error?: string }; message?: string; statusText?: string };
  return any.data?.message ?? any.data?.error ?? any.message ?? any.statusText ?? String(e);
}

export function toOptions(values: Array<string | number>): Array<SelectableValue<string>> {
  return values.map((v) => ({ label: String(v), value: String(v) }));
}

/** Dashboard variables, offered in every list so a query can follow the dashboard. */
export function variableOptions(): Array<SelectableValue<string>> {
  try {
    return getTemplateSrv()
      .getVariables()
      .map((v) => ({ label: `$${v.name}`, value: `$${v.name}`, description: 'Dashboard variable' }));
  } catch {
    return [];
  }
}

/** Options plus the current value when it is not among them (custom or not loaded yet). */
export function withCurrent(
  options: Array<SelectableValue<string>>,
  current: string | string[] | undefined
): Array<SelectableValue<string>> {
  const currents = current === undefined ? [] : Array.isArray(current) ? current : [current];
  const extra = currents
    .filter((c) => c !== '' && !options.some((o) => o.value === c))
    .map((c) => ({ label: c, value: c }));
  return [...options, ...extra];
}
