import React, { useRef } from 'react';
import { css } from '@emotion/css';
import { GrafanaTheme2, QueryEditorProps, SelectableValue } from '@grafana/data';
import { Alert, Button, InlineField, InlineSwitch, RadioButtonGroup, Stack, useStyles2 } from '@grafana/ui';

import type { DataSource } from '../datasource';
import { defaultBuilderQuery, defaultPipelineQuery, Mode, MPOptions, MPQuery } from '../types';
import { validate } from '../validate';
import { Problems } from './Problems';
import { BuilderEditor } from './BuilderEditor';
import { PipelineEditor } from './PipelineEditor';

export type Props = QueryEditorProps<DataSource, MPQuery, MPOptions>;

type EditorMode = Extract<Mode, 'builder' | 'pipeline'>;

const MODE_OPTIONS: Array<SelectableValue<EditorMode>> = [
  { label: 'Builder', value: 'builder', description: 'Event type, measures, filters, group by' },
  { label: 'Pipeline', value: 'pipeline', description: 'A raw aggregation pipeline with macros' },
];

/** Grafana's own fields, kept when the mode changes. */
const GRAFANA_KEYS = ['refId', 'datasource', 'hide', 'key', 'queryType'] as const;

export function withDefaults(query: MPQuery, defaultGranularity: MPQuery['granularity'] = 'auto'): MPQuery {
  const mode = query.mode ?? 'builder';
  if (mode === 'plugin') {
    // No options to default; builder defaults would make it look like a builder query.
    return query;
  }
  const defaults = mode === 'pipeline' ? defaultPipelineQuery() : defaultBuilderQuery(defaultGranularity);
  return { ...defaults, ...query } as MPQuery;
}

export function QueryEditor(props: Props) {
  const { datasource, onChange, onRunQuery, range } = props;
  const styles = useStyles2(getStyles);
  const query = withDefaults(props.query, datasource.defaultGranularity);
  const mode: EditorMode = query.mode === 'pipeline' ? 'pipeline' : 'builder';
  const problems = validate(query);
  // What the other mode held, so switching back and forth loses nothing.
  const stash = useRef<Partial<Record<EditorMode, MPQuery>>>({});

  const change = (next: MPQuery, run = true) => {
    onChange(next);
    if (run && validate(next).length === 0) {
      onRunQuery();
    }
  };
  const runIfValid = () => {
    if (validate(query).length === 0) {
      onRunQuery();
    }
  };

  const switchMode = (to: EditorMode) => {
    if (to === mode && query.mode !== 'plugin') {
      return;
    }
    stash.current[mode] = query;
    const grafana: Partial<MPQuery> = {};
    for (const k of GRAFANA_KEYS) {
      if (query[k] !== undefined) {
        (grafana as Record<string, unknown>)[k] = query[k];
      }
    }
    const base = stash.current[to] ?? (to === 'pipeline' ? defaultPipelineQuery() : defaultBuilderQuery(datasource.defaultGranularity));
    change({ ...base, ...grafana, mode: to } as MPQuery, false);
  };

  const invalid = (field: string) => problems.some((p) => p.field === field);

  return (
    <div className={styles.root} data-testid="mongopulse-query-editor">
      <Stack direction="row" justifyContent="space-between" alignItems="center" wrap="wrap">
        <RadioButtonGroup<EditorMode>
          size="sm"
          options={MODE_OPTIONS}
          value={query.mode === 'plugin' ? undefined : mode}
          onChange={switchMode}
        />
        <Stack direction="row" gap={1} alignItems="center">
          {mode === 'builder' && query.mode !== 'plugin' && (
            <InlineField label="Live" tooltip="Stream updates through Grafana Live as rollups change (needs a replica set)" className={styles.noMargin}>
              <InlineSwitch
                aria-label="Live"
                value={!!query.live}
                onChange={(e) => {
                  const next = { ...query };
                  if (e.currentTarget.checked) {
                    next.live = true;
                  } else {
                    delete next.live;
                  }
                  change(next);
                }}
              />
            </InlineField>
          )}
          <Button size="sm" variant="primary" icon="play" disabled={problems.length > 0} onClick={() => onRunQuery()}>
            Run query
          </Button>
        </Stack>
      </Stack>

      {query.mode === 'plugin' ? (
        <Alert severity="info" title="The plugin's own figures">
          This query answers with the plugin&apos;s cache hit ratio, live channels, change streams and query counts
          (the operations dashboard uses it). It has no options; choose Builder or Pipeline to query analytics.
        </Alert>
      ) : mode === 'builder' ? (
        <BuilderEditor
          query={query}
          datasource={datasource}
          range={range}
          invalid={invalid}
          change={change}
          onBlur={runIfValid}
        />
      ) : (
        <PipelineEditor query={query} invalid={invalid} change={change} />
      )}

      <Problems problems={problems} />
    </div>
  );
}

const getStyles = (theme: GrafanaTheme2) => ({
  root: css({ display: 'flex', flexDirection: 'column', gap: theme.spacing(1) }),
  noMargin: css({ margin: 0 }),
});
