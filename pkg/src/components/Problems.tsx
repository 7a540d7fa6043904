import React from 'react';
import { css } from '@emotion/css';
import { GrafanaTheme2 } from '@grafana/data';
import { useStyles2 } from '@grafana/ui';

import { Problem } from '../validate';

/** What keeps the query from running, in the words a user can act on. */
export function Problems({ problems }: { problems: Problem[] }) {
  const styles = useStyles2(getStyles);
  if (problems.length === 0) {
    return null;
  }
  return (
    <ul className={styles.problems} aria-label="Query problems" role="status">
      {problems.map((p, i) => (
        <li key={i} data-field={p.field}>
          {p.message}
        </li>
      ))}
    </ul>
  );
}

const getStyles = (theme: GrafanaTheme2) => ({
  problems: css({
    margin: 0,
    padding: theme.spacing(0.5, 1, 0.5, 3),
    color: theme.colors.warning.text,
    background: theme.colors.warning.transparent,
    borderRadius: theme.shape.radius.default,
    fontSize: theme.typography.bodySmall.fontSize,
  }),
});
