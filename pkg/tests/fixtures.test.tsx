/**
 * For every query fixture shared with the Rust golden tests
 * (tests/fixtures/queries/*.json), drive the editor the way a user would and
 * check that the query it writes is exactly the fixture — the JSON the backend
 * accepts. A new fixture without a scenario here fails the suite.
 */
import React from 'react';
import { fireEvent } from '@testing-library/react';

import { AnnotationsQueryEditor } from '../src/components/AnnotationsQueryEditor';
import { QueryEditor } from '../src/components/QueryEditor';
import { VariableQueryEditor } from '../src/components/VariableQueryEditor';
import { MPQuery } from '../src/types';
import { validate } from '../src/validate';
import {
  choose,
  fixtureNames,
  loadFixture,
  makeDataSource,
  renderEditor,
  screen,
  typeCustom,
  User,
  waitFor,
  withoutGrafanaKeys,
} from './helpers';

// Monaco does not run in jsdom; the editor's contract is value/onChange/onBlur.
vi.mock('@grafana/ui', async (importOriginal) => {
  const ui = await importOriginal<typeof import('@grafana/ui')>();
  return {
    ...ui,
    CodeEditor: ({ value, onChange, onBlur }: any) => (
      <textarea
        aria-label="Pipeline code"
        value={value}
        onChange={(e) => onChange?.(e.currentTarget.value)}
        onBlur={(e) => onBlur?.(e.currentTarget.value)}
      />
    ),
  };
});

type Scenario = () => Promise<MPQuery | undefined>;

/** A new panel query, as Grafana creates it: refId plus the data source's default query. */
function newPanelQuery(refId: string) {
  const { ds } = makeDataSource();
  return { ds, query: { refId, datasource: { type: ds.type, uid: ds.uid }, ...ds.getDefaultQuery('dashboard' as any) } };
}

async function pickEventType(user: User, refId: string) {
  await choose(user, screen.getByLabelText('Event type'), 'page_view');
  await waitFor(() => expect(screen.getByText('page_view')).toBeInTheDocument());
  void refId;
}

async function setInput(user: User, label: string, text: string) {
  const input = screen.getByLabelText(label);
  await user.clear(input);
  await user.click(input);
  await user.paste(text);
  await user.tab();
}

const scenarios: Record<string, Scenario> = {
  'builder_count.json': async () => {
    const { ds, query } = newPanelQuery('A');
    const { user, state } = renderEditor(QueryEditor, query, ds);
    await pickEventType(user, 'A');
    return state.last;
  },

  'builder_p95_by_country.json': async () => {
    const { ds, query } = newPanelQuery('A');
    const { user, state } = renderEditor(QueryEditor, query, ds);
    await pickEventType(user, 'A');
    await choose(user, 'Measure 1 type', 'Percentile');
    await choose(user, 'Measure 1 metric', 'pageLoadTime');
    expect(state.last?.measures?.[0].percentile).toBe(95); // the default
    await user.click(screen.getByRole('button', { name: 'Add filter' }));
    await choose(user, 'Filter 1 dimension', 'deviceType');
    await choose(user, 'Filter 1 value', 'mobile');
    await choose(user, 'Group by', 'country');
    await setInput(user, 'Alias', '{{country}} p95');
    return state.last;
  },

  'builder_topk_table.json': async () => {
    const { ds, query } = newPanelQuery('A');
    const { user, state } = renderEditor(QueryEditor, query, ds);
    await pickEventType(user, 'A');
    await choose(user, 'Measure 1 type', 'Top-K values');
    await choose(user, 'Measure 1 attribute', 'landingPage');
    await setInput(user, 'Measure 1 K', '5');
    await user.click(screen.getByRole('radio', { name: 'Table' }));
    return state.last;
  },

  'builder_full.json': async () => {
    const { ds, query } = newPanelQuery('A');
    const { user, state } = renderEditor(QueryEditor, query, ds);
    await pickEventType(user, 'A');
    await choose(user, 'Granularity', 'Hour');

    // Measures: count (already there), avg load, distinct users, 5-minute moving rate.
    await user.click(screen.getByRole('button', { name: 'Add measure' }));
    await choose(user, 'Measure 2 type', 'Average');
    await choose(user, 'Measure 2 metric', 'pageLoadTime');
    await setInput(user, 'Measure 2 alias', 'avg load');
    await user.click(screen.getByRole('button', { name: 'Add measure' }));
    await choose(user, 'Measure 3 type', 'Distinct');
    await user.click(screen.getByRole('button', { name: 'Add measure' }));
    await choose(user, 'Measure 4 type', 'Rate (/s)');
    // The window length is the fixture's (the backend may tie it to the granularity).
    const window = loadFixture('builder_full.json').measures![3].window!.minutes;
    await setInput(user, 'Measure 4 window', String(window));

    // Filters: country in FR, DE, US; browser != Edge; deviceType starts with "mob".
    await user.click(screen.getByRole('button', { name: 'Add filter' }));
    await choose(user, 'Filter 1 dimension', 'country');
    await choose(user, 'Filter 1 operator', 'in');
    for (const c of ['FR', 'DE', 'US']) {
      await choose(user, 'Filter 1 values', c);
    }
    await user.click(screen.getByRole('button', { name: 'Add filter' }));
    await choose(user, 'Filter 2 dimension', 'browser');
    await choose(user, 'Filter 2 operator', '!=');
    await choose(user, 'Filter 2 value', 'Edge');
    await user.click(screen.getByRole('button', { name: 'Add filter' }));
    await choose(user, 'Filter 3 dimension', 'deviceType');
    await choose(user, 'Filter 3 operator', 'starts with');
    await setInput(user, 'Filter 3 value', 'mob');

    await choose(user, 'Group by', 'country');
    await choose(user, 'Group by', 'deviceType');

    await user.click(screen.getByLabelText('Top N'));
    await setInput(user, 'Top N limit', '5');
    await user.click(screen.getByLabelText('Top N other'));

    await choose(user, 'Compare', '1 day before');
    await user.click(screen.getByRole('radio', { name: 'Zero' }));
    await user.click(screen.getByRole('radio', { name: 'Wide' }));
    await setInput(user, 'Alias', '{{country}}/{{deviceType}} {{measure}}');
    return state.last;
  },

  'pipeline_time_group.json': async () => {
    const { ds, query } = newPanelQuery('B');
    const { user, state } = renderEditor(QueryEditor, query, ds);
    await user.click(screen.getByRole('radio', { name: 'Pipeline' }));
    await choose(user, 'Collection', 'metrics_minutely');
    const fixture = loadFixture('pipeline_time_group.json');
    const code = screen.getByLabelText('Pipeline code');
    fireEvent.change(code, { target: { value: fixture.pipeline } });
    fireEvent.blur(code);
    await setInput(user, 'Time field', '_id');
    await user.click(screen.getByRole('radio', { name: 'Time series' }));
    return state.last;
  },

  'variable_dimension_values.json': async () => {
    const { ds } = makeDataSource();
    // A new query variable starts with an empty query.
    const { user, state } = renderEditor(VariableQueryEditor, '', ds);
    await user.click(screen.getByRole('radio', { name: 'Dimension values' }));
    await choose(user, 'Event type', 'page_view');
    await choose(user, 'Dimension', 'country');
    return state.last;
  },

  'annotations_alerts.json': async () => {
    const { ds } = makeDataSource();
    // Grafana runs annotation queries with refId "Anno".
    const { user, state } = renderEditor(AnnotationsQueryEditor, { refId: 'Anno' }, ds);
    await user.click(screen.getByLabelText('Resolved'));
    expect(state.last?.states).toEqual(['firing']);
    await user.click(screen.getByLabelText('Resolved'));
    return state.last;
  },
};

describe('the editors write the shared query fixtures', () => {
  it('has a scenario for every fixture', () => {
    expect(fixtureNames().filter((f) => !(f in scenarios))).toEqual([]);
  });

  for (const name of fixtureNames()) {
    it(name, async () => {
      const scenario = scenarios[name];
      expect(scenario, `no scenario for ${name}`).toBeDefined();
      const written = await scenario();
      expect(written, 'the editor wrote nothing').toBeDefined();
      expect(withoutGrafanaKeys(written!)).toEqual(loadFixture(name));
      expect(validate(written!)).toEqual([]);
    });
  }
});

describe('typing a custom value', () => {
  it('accepts an event type the schema does not list yet', async () => {
    const { ds, query } = newPanelQuery('A');
    const { user, state } = renderEditor(QueryEditor, query, ds);
    await typeCustom(user, 'Event type', 'signup');
    expect(state.last?.eventType).toBe('signup');
  });
});
