import React, { useState } from 'react';
import { readdirSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { dirname, join, resolve } from 'node:path';
import { DataSourceInstanceSettings, PluginType } from '@grafana/data';
import { act, render, screen, waitFor, within } from '@testing-library/react';
import userEvent from '@testing-library/user-event';

import { DataSource } from '../src/datasource';
import { MPOptions, MPQuery, Schema } from '../src/types';

/** The fixtures shared with the Rust golden tests (read in place, never copied). */
export const FIXTURE_DIR = resolve(dirname(fileURLToPath(import.meta.url)), '../../tests/fixtures/queries');

export function fixtureNames(): string[] {
  return readdirSync(FIXTURE_DIR)
    .filter((f) => f.endsWith('.json'))
    .sort();
}

export function loadFixture(name: string): MPQuery {
  return JSON.parse(readFileSync(join(FIXTURE_DIR, name), 'utf8'));
}

/** What Grafana adds to a query and the backend ignores. */
export function withoutGrafanaKeys(q: MPQuery): MPQuery {
  const { datasource: _d, key: _k, ...rest } = q;
  return rest as MPQuery;
}

export const SCHEMA: Schema = {
  eventTypes: ['click', 'page_view', 'purchase'],
  specs: ['default'],
  dimensions: ['browser', 'country', 'deviceType'],
  metrics: ['pageLoadTime', 'revenue'],
  quantiles: [50, 90, 95, 99],
  distinct: ['userId', 'sessionId'],
  topK: ['landingPage', 'referrer'],
};

export const DIMENSION_VALUES: Record<string, string[]> = {
  browser: ['Chrome', 'Edge', 'Firefox', 'Safari'],
  country: ['DE', 'FR', 'GB', 'US'],
  deviceType: ['desktop', 'mobile', 'tablet'],
};

export function instanceSettings(jsonData: MPOptions = {}): DataSourceInstanceSettings<MPOptions> {
  return {
    id: 1,
    uid: 'mongopulse',
    type: 'mongopulse-analytics-datasource',
    name: 'Mongo Pulse',
    access: 'proxy',
    readOnly: false,
    jsonData,
    meta: {
      id: 'mongopulse-analytics-datasource',
      name: 'Mongo Pulse',
      type: PluginType.datasource,
      module: 'plugins/mongopulse-analytics-datasource/module',
      baseUrl: 'public/plugins/mongopulse-analytics-datasource',
      info: {
        author: { name: 'Mongo Pulse' },
        description: '',
        links: [],
        logos: { small: '', large: '' },
        screenshots: [],
        updated: '',
        version: '0.1.0',
      },
    },
  };
}

/**
 * The real DataSource class with its resource calls answered from the
 * contract's shapes (docs/query-model.md), since no backend runs here.
 */
export function makeDataSource(jsonData: MPOptions = {}) {
  const ds = new DataSource(instanceSettings(jsonData));
  const getResource = vi.spyOn(ds, 'getResource').mockImplementation(async (path: string, params?: any) => {
    switch (path) {
      case 'schema':
        return SCHEMA;
      case 'event-types':
        return SCHEMA.eventTypes;
      case 'dimensions':
        return SCHEMA.dimensions;
      case 'dimension-values': {
        const all = DIMENSION_VALUES[params?.dim] ?? [];
        return all.filter((v) => v.toLowerCase().startsWith(String(params?.prefix ?? '').toLowerCase()));
      }
      default:
        throw new Error(`unexpected resource ${path}`);
    }
  });
  const postResource = vi.spyOn(ds, 'postResource').mockImplementation(async (path: string, body?: any) => {
    if (path !== 'build') {
      throw new Error(`unexpected resource ${path}`);
    }
    return {
      collection: 'metrics_minutely',
      pipeline: [{ $match: { 'metrics.eventType': body.eventType } }, { $group: { _id: '$timestamp' } }],
    };
  });
  return { ds, getResource, postResource };
}

type EditorComponent = React.ComponentType<any>;

/**
 * Renders an editor the way Grafana does: it owns the query, the editor only
 * proposes changes through onChange. Returns the last query written.
 */
export function renderEditor(Editor: EditorComponent, initial: any, ds: DataSource, extra: Record<string, unknown> = {}) {
  const state = { last: undefined as MPQuery | undefined, changes: 0 };
  const onRunQuery = vi.fn();
  function Host() {
    const [query, setQuery] = useState(initial);
    return (
      <Editor
        query={query}
        datasource={ds}
        onChange={(q: MPQuery) => {
          state.last = q;
          state.changes++;
          setQuery(q);
        }}
        onRunQuery={onRunQuery}
        {...extra}
      />
    );
  }
  const user = userEvent.setup();
  const utils = render(<Host />);
  return { ...utils, user, state, onRunQuery };
}

export type User = ReturnType<typeof userEvent.setup>;

/** Opens the Select labelled `label` and picks the option `text`. */
export async function choose(user: User, label: string | HTMLElement, text: string) {
  const input = typeof label === 'string' ? screen.getByLabelText(label) : label;
  await user.click(input);
  const menu = await screen.findByLabelText('Select options menu');
  const option = await within(menu).findByText(text, { exact: true });
  await user.click(option);
}

/** Types into a Select with custom values allowed and confirms with Enter. */
export async function typeCustom(user: User, label: string, text: string) {
  const input = screen.getByLabelText(label);
  await user.click(input);
  await user.type(input, text);
  await user.keyboard('{Enter}');
}

export async function settle() {
  await act(async () => {
    await new Promise((r) => setTimeout(r, 0));
  });
}

export { screen, waitFor, within };
