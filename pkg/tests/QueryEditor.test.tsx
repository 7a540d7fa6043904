import React from 'react';
import { dateTime } from '@grafana/data';

import { QueryEditor } from '../src/components/QueryEditor';
import { choose, loadFixture, makeDataSource, renderEditor, screen, waitFor, withoutGrafanaKeys } from './helpers';

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

function newQuery(ds: ReturnType<typeof makeDataSource>['ds'], refId = 'A') {
  return { refId, ...ds.getDefaultQuery('dashboard' as any) };
}

describe('QueryEditor', () => {
  it('keeps a plugin-figures query as it is, says what it is, and can switch to the builder', async () => {
    const { ds } = makeDataSource();
    const query = { refId: 'A', mode: 'plugin' as const };
    const { user, state } = renderEditor(QueryEditor, query, ds);
    expect(screen.getByText("The plugin's own figures")).toBeInTheDocument();
    expect(screen.queryByRole('status', { name: 'Query problems' })).not.toBeInTheDocument();
    expect(screen.getByRole('button', { name: 'Run query' })).toBeEnabled();
    expect(state.changes).toBe(0);

    await user.click(screen.getByRole('radio', { name: 'Builder' }));
    expect(state.last?.mode).toBe('builder');
    expect(screen.queryByText("The plugin's own figures")).not.toBeInTheDocument();
  });

  it('says what is missing and does not run an incomplete query', async () => {
    const { ds } = makeDataSource();
    const { user, onRunQuery, state } = renderEditor(QueryEditor, newQuery(ds), ds);
    expect(screen.getByRole('status', { name: 'Query problems' })).toHaveTextContent('Choose an event type');
    expect(screen.getByRole('button', { name: 'Run query' })).toBeDisabled();

    await choose(user, 'Measure 1 type', 'Average');
    expect(onRunQuery).not.toHaveBeenCalled();
    expect(screen.getByRole('status')).toHaveTextContent('Measure 1 (avg): choose a metric.');

    await choose(user, 'Event type', 'page_view');
    await choose(user, 'Measure 1 metric', 'revenue');
    expect(screen.queryByRole('status', { name: 'Query problems' })).not.toBeInTheDocument();
    expect(onRunQuery).toHaveBeenCalledTimes(1);
    expect(state.last?.measures).toEqual([{ type: 'avg', metric: 'revenue' }]);
  });

  it('loads event types and metrics from the schema endpoint', async () => {
    const { ds, getResource } = makeDataSource();
    const { user } = renderEditor(QueryEditor, newQuery(ds), ds);
    await choose(user, 'Event type', 'purchase');
    await waitFor(() => expect(getResource).toHaveBeenCalledWith('schema', { eventType: 'purchase' }));
  });

  it('searches dimension values by prefix within the time range', async () => {
    const { ds, getResource } = makeDataSource();
    const range = { from: dateTime(1000), to: dateTime(2000), raw: { from: 'now-1h', to: 'now' } };
    const { user } = renderEditor(QueryEditor, { ...newQuery(ds), eventType: 'page_view' }, ds, { range });
    await user.click(screen.getByRole('button', { name: 'Add filter' }));
    await choose(user, 'Filter 1 dimension', 'country');
    const input = screen.getByLabelText('Filter 1 value');
    await user.click(input);
    await user.type(input, 'F');
    await waitFor(() =>
      expect(getResource).toHaveBeenCalledWith('dimension-values', {
        dim: 'country',
        prefix: 'F',
        eventType: 'page_view',
        from: 1000,
        to: 2000,
      })
    );
    const options = await screen.findAllByRole('option');
    expect(options.map((o) => o.textContent)).toContain('FR');
    expect(options.map((o) => o.textContent)).not.toContain('DE');
  });

  it('offers dashboard variables as filter values', async () => {
    const { ds } = makeDataSource();
    const { user, state } = renderEditor(QueryEditor, { ...newQuery(ds), eventType: 'page_view' }, ds);
    await user.click(screen.getByRole('button', { name: 'Add filter' }));
    await choose(user, 'Filter 1 dimension', 'country');
    await choose(user, 'Filter 1 operator', 'in');
    await choose(user, 'Filter 1 values', '$country');
    expect(state.last?.filters).toEqual([{ dimension: 'country', op: 'in', values: ['$country'] }]);
  });

  it('toggles live, writing the key only when on', async () => {
    const { ds } = makeDataSource();
    const { user, state } = renderEditor(QueryEditor, loadFixture('builder_count.json'), ds);
    await user.click(screen.getByLabelText('Live'));
    expect(state.last?.live).toBe(true);
    await user.click(screen.getByLabelText('Live'));
    expect(withoutGrafanaKeys(state.last!)).toEqual(loadFixture('builder_count.json'));
  });

  it('keeps each mode’s query when switching back and forth', async () => {
    const { ds } = makeDataSource();
    const full = loadFixture('builder_full.json');
    const { user, state } = renderEditor(QueryEditor, full, ds);
    await user.click(screen.getByRole('radio', { name: 'Pipeline' }));
    expect(state.last).toEqual({
      refId: 'A',
      mode: 'pipeline',
      collection: 'metrics_minutely',
      pipeline: '',
      format: 'timeseries',
    });
    await user.click(screen.getByRole('button', { name: /Use the example/ }));
    const pipeline = state.last!.pipeline;
    expect(pipeline).toContain('$__timeGroup(timestamp)');
    await user.click(screen.getByRole('radio', { name: 'Builder' }));
    expect(state.last).toEqual(full);
    await user.click(screen.getByRole('radio', { name: 'Pipeline' }));
    expect(state.last?.pipeline).toBe(pipeline);
  });

  it('shows the pipeline builder mode runs', async () => {
    const { ds, postResource } = makeDataSource();
    const q = loadFixture('builder_p95_by_country.json');
    const { user } = renderEditor(QueryEditor, q, ds);
    await user.click(screen.getByText('Generated pipeline'));
    const pre = await screen.findByTestId('generated-pipeline');
    expect(postResource).toHaveBeenCalledWith('build', q);
    expect(pre).toHaveTextContent('"$match"');
    expect(screen.getByText('metrics_minutely')).toBeInTheDocument();
  });

  it('builds the pipeline with dashboard variables replaced', async () => {
    const { ds, postResource } = makeDataSource();
    const q = {
      ...loadFixture('builder_count.json'),
      filters: [{ dimension: 'country', op: 'eq', values: ['$country'] }],
    };
    const { user } = renderEditor(QueryEditor, q, ds);
    await user.click(screen.getByText('Generated pipeline'));
    await screen.findByTestId('generated-pipeline');
    expect(postResource.mock.calls[0][1].filters).toEqual([{ dimension: 'country', op: 'in', values: ['FR', 'DE'] }]);
  });

  it('shows the backend’s refusal from the build endpoint', async () => {
    const { ds, postResource } = makeDataSource();
    postResource.mockResolvedValue({ error: 'unknown metric "pageLoad"', field: 'measures.0.metric' });
    const { user } = renderEditor(QueryEditor, loadFixture('builder_count.json'), ds);
    await user.click(screen.getByText('Generated pipeline'));
    expect(await screen.findByText(/unknown metric "pageLoad"/)).toHaveTextContent(
      '(field measures.0.metric)'
    );
  });

  it('validates a pipeline before it runs', async () => {
    const { ds } = makeDataSource();
    const { user, onRunQuery } = renderEditor(QueryEditor, loadFixture('pipeline_time_group.json'), ds);
    const code = screen.getByLabelText('Pipeline code');
    await user.clear(code);
    await user.click(code);
    await user.paste('[{"$out": "x"}]');
    await user.tab();
    expect(screen.getByRole('status')).toHaveTextContent('$out is not allowed: pipelines are read-only.');
    expect(onRunQuery).not.toHaveBeenCalled();
  });
});
