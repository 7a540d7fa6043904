import React, { useEffect, useState } from 'react';
import { css } from '@emotion/css';
import { GrafanaTheme2 } from '@grafana/data';
import { Alert, ClipboardButton, Collapse, useStyles2 } from '@grafana/ui';

import type { DataSource } from '../datasource';
import { BuildResult, MPQuery } from '../types';
import { validateBuilder } from '../validate';
import { errorText } from './hooks';

interface Props {
  query: MPQuery;
  datasource: DataSource;
  /** Open on first render (the browser harness uses it for the screenshot). */
  defaultOpen?: boolean;
}

/**
 * The aggregation pipeline builder mode runs (`POST build`), for learning and
 * for starting a pipeline-mode query from it.
 */
export function PipelinePreview({ query, datasource, defaultOpen = false }: Props) {
  const styles = useStyles2(getStyles);
  const [open, setOpen] = useState(defaultOpen);
  const [result, setResult] = useState<BuildResult | { failed: string } | undefined>();
  const valid = validateBuilder(query).length === 0;
  const key = JSON.stringify({ ...query, refId: undefined, datasource: undefined, key: undefined });

  useEffect(() => {
    if (!open || !valid) {
      return;
    }
    let live = true;
    const timer = setTimeout(() => {
      datasource
        // What would run: dashboard variables replaced, as for the panel.
        .build(datasource.applyTemplateVariables(query, {}))
        .then((r) => live && setResult(r))
        .catch((e) => live && setResult({ failed: errorText(e) }));
    }, 300);
    return () => {
      live = false;
      clearTimeout(timer);
    };
    // `key` stands for the query.
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [open, valid, key, datasource]);

  let body: React.ReactNode;
  if (!valid) {
    body = <div className={styles.muted}>Complete the query to see the pipeline it runs.</div>;
  } else if (!result) {
    body = <div className={styles.muted}>Building…</div>;
  } else if ('failed' in result) {
    body = <Alert severity="warning" title={`Could not build the pipeline: ${result.failed}`} />;
  } else if (result.error !== undefined) {
    body = (
      <Alert severity="error" title="The backend refuses this query">
        {result.error}
        {result.field ? ` (field ${result.field})` : ''}
      </Alert>
    );
  } else {
    const text = JSON.stringify(result.pipeline, null, 2);
    body = (
      <div>
        <div className={styles.toolbar}>
          <span className={styles.muted}>
            db.<b>{result.collection}</b>.aggregate(…) — the backend merges sketches and fills gaps afterwards
          </span>
          <ClipboardButton icon="copy" variant="secondary" size="sm" getText={() => text}>
            Copy
          </ClipboardButton>
        </div>
        <pre className={styles.pre} data-testid="generated-pipeline">
          {text}
        </pre>
      </div>
    );
  }

  return (
    <Collapse label="Generated pipeline" collapsible isOpen={open} onToggle={() => setOpen(!open)}>
      {body}
    </Collapse>
  );
}

const getStyles = (theme: GrafanaTheme2) => ({
  muted: css({ color: theme.colors.text.secondary, fontSize: theme.typography.bodySmall.fontSize }),
  toolbar: css({
    display: 'flex',
    justifyContent: 'space-between',
    alignItems: 'center',
    marginBottom: theme.spacing(1),
  }),
  pre: css({ maxHeight: 320, overflow: 'auto', fontSize: theme.typography.bodySmall.fontSize, margin: 0 }),
});
