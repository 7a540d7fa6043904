/**
 * Checks a query before it runs, so the editor can say what is missing
 * instead of sending a request the backend would refuse. The backend checks
 * again (alert rules never pass through here); these messages mirror its rules
 * in docs/query-model.md.
 */
import {
  ADDITIVE_MEASURES,
  FILTER_OPS,
  GRANULARITIES,
  MEASURE_TYPES,
  measureNeedsMetric,
  MPQuery,
  PIPELINE_COLLECTIONS,
  READ_ONLY_REFUSED_STAGES,
} from './types';

export interface Problem {
  /** Dotted path of the field at fault, e.g. `measures.1.metric`. */
  field: string;
  message: string;
}

const SHIFT = /^\d+[mhdw]$/;
const TEMPLATE_VAR = /\$(\w+|\{[^}]+\})/;

function isTemplate(s: string | undefined): boolean {
  return !!s && TEMPLATE_VAR.test(s);
}

export function validate(q: MPQuery): Problem[] {
  switch (q.mode ?? 'builder') {
    case 'builder':
      return validateBuilder(q);
    case 'pipeline':
      return validatePipeline(q);
    case 'variable':
      return validateVariable(q);
    case 'annotations':
      return validateAnnotations(q);
    case 'plugin':
      return [];
    default:
      return [{ field: 'mode', message: `Unknown mode "${q.mode}".` }];
  }
}

export function validateBuilder(q: MPQuery): Problem[] {
  const problems: Problem[] = [];
  const add = (field: string, message: string) => problems.push({ field, message });

  if (!q.eventType) {
    add('eventType', 'Choose an event type (or "All event types").');
  }
  const measures = q.measures ?? [];
  if (measures.length === 0) {
    add('measures', 'Add at least one measure.');
  }
  measures.forEach((m, i) => {
    const at = `measures.${i}`;
    const n = `Measure ${i + 1}`;
    if (!MEASURE_TYPES.includes(m.type)) {
      add(`${at}.type`, `${n}: unknown type "${m.type}".`);
      return;
    }
    if (measureNeedsMetric(m.type) && !m.metric) {
      add(`${at}.metric`, `${n} (${m.type}): choose a metric.`);
    }
    if (m.type === 'percentile') {
      const p = m.percentile;
      if (p === undefined || !(p > 0 && p < 100)) {
        add(`${at}.percentile`, `${n}: the percentile must be between 0 and 100 (exclusive), e.g. 95 or 99.9.`);
      }
    }
    if (m.type === 'distinct' && !m.key) {
      add(`${at}.key`, `${n} (distinct): choose what to count (userId, sessionId…).`);
    }
    if (m.type === 'topk') {
      if (!m.attribute) {
        add(`${at}.attribute`, `${n} (top-K): choose an attribute.`);
      }
      if (m.k === undefined || !Number.isInteger(m.k) || m.k < 1 || m.k > 100) {
        add(`${at}.k`, `${n} (top-K): K must be a whole number from 1 to 100.`);
      }
    }
    if (m.window !== undefined) {
      const w = m.window.minutes;
      if (!Number.isInteger(w) || w < 1) {
        add(`${at}.window`, `${n}: the moving window must be a whole number of minutes, at least 1.`);
      }
    }
  });

  (q.filters ?? []).forEach((f, i) => {
    const at = `filters.${i}`;
    const n = `Filter ${i + 1}`;
    if (!f.dimension) {
      add(`${at}.dimension`, `${n}: choose a dimension.`);
    }
    if (!FILTER_OPS.includes(f.op)) {
      add(`${at}.op`, `${n}: unknown operator "${f.op}".`);
    }
    const values = f.values ?? [];
    if (values.length === 0) {
      add(`${at}.values`, `${n}: enter a value.`);
    } else if (
      (f.op === 'eq' || f.op === 'neq' || f.op === 'prefix') &&
      values.length > 1
    ) {
      add(`${at}.values`, `${n}: "${f.op}" takes one value; use "in" or "not in" for several.`);
    }
  });

  const groupBy = q.groupBy ?? [];
  if (new Set(groupBy).size !== groupBy.length) {
    add('groupBy', 'Group by lists a dimension twice.');
  }

  if (q.granularity !== undefined && !GRANULARITIES.includes(q.granularity)) {
    add('granularity', `Unknown granularity "${q.granularity}".`);
  }

  if (q.topN) {
    const { limit, measure } = q.topN;
    if (!Number.isInteger(limit) || limit < 1) {
      add('topN.limit', 'Top N: the limit must be a whole number, at least 1.');
    }
    if (!Number.isInteger(measure) || measure < 0 || measure >= measures.length) {
      add('topN.measure', 'Top N: rank by one of the measures above.');
    }
    if (groupBy.length === 0) {
      add('topN', 'Top N ranks groups: add a dimension to "Group by".');
    }
  }

  if (q.compare) {
    const shift = q.compare.shift;
    if (!shift || (!SHIFT.test(shift) && !isTemplate(shift))) {
      add('compare.shift', 'Compare: the shift is a number and a unit, e.g. 1h, 1d, 7d or 2w.');
    }
  }
  return problems;
}

/** Replaces the backend macros with JSON placeholders so the text can be parsed. */
export function withMacrosAsPlaceholders(pipeline: string): string {
  return pipeline
    .replace(/\$__timeFilter\(\s*[\w.]+\s*\)/g, '{}')
    .replace(/\$__timeGroup\(\s*[\w.]+\s*\)/g, '{}')
    .replace(/\$__timeFrom\b/g, '0')
    .replace(/\$__timeTo\b/g, '0')
    .replace(/\$__interval_ms\b/g, '0');
}

export function validatePipeline(q: MPQuery): Problem[] {
  const problems: Problem[] = [];
  if (!q.collection) {
    problems.push({ field: 'collection', message: 'Choose a collection.' });
  } else if (!PIPELINE_COLLECTIONS.includes(q.collection) && !isTemplate(q.collection)) {
    problems.push({
      field: 'collection',
      message: `"${q.collection}" is not one of the data source's collections (${PIPELINE_COLLECTIONS.join(', ')}).`,
    });
  }
  const text = (q.pipeline ?? '').trim();
  if (!text) {
    problems.push({ field: 'pipeline', message: 'Write an aggregation pipeline: a JSON array of stages.' });
    return problems;
  }
  for (const stage of READ_ONLY_REFUSED_STAGES) {
    const key = new RegExp(`"\\${stage}"\\s*:`);
    if (key.test(text)) {
      problems.push({ field: 'pipeline', message: `${stage} is not allowed: pipelines are read-only.` });
    }
  }
  const placeholders = withMacrosAsPlaceholders(text);
  // Dashboard variables outside strings cannot be checked before Grafana replaces them.
  if (!TEMPLATE_VAR.test(placeholders.replace(/"(?:[^"\\]|\\.)*"/g, '""'))) {
    try {
      const parsed = JSON.parse(placeholders);
      if (!Array.isArray(parsed)) {
        problems.push({ field: 'pipeline', message: 'A pipeline is a JSON array of stages: [ {...}, {...} ].' });
      }
    } catch (e) {
      problems.push({ field: 'pipeline', message: `The pipeline is not valid JSON: ${(e as Error).message}` });
    }
  }
  if (q.format !== undefined && q.format !== 'timeseries' && q.format !== 'table') {
    problems.push({ field: 'format', message: 'Pipeline results are a time series or a table.' });
  }
  return problems;
}

export function validateVariable(q: MPQuery): Problem[] {
  switch (q.variable) {
    case 'eventTypes':
      return [];
    case 'dimensions':
      return q.eventType ? [] : [{ field: 'eventType', message: 'Dimensions are listed per event type: choose one.' }];
    case 'dimensionValues':
      return q.dimension ? [] : [{ field: 'dimension', message: 'Choose the dimension whose values to list.' }];
    default:
      return [{ field: 'variable', message: 'Choose what the variable lists.' }];
  }
}

export function validateAnnotations(q: MPQuery): Problem[] {
  return (q.states ?? []).length === 0
    ? [{ field: 'states', message: 'Choose at least one alert state to show.' }]
    : [];
}

/** Measures whose "other" series cannot be summed (shown as a hint, not an error). */
export function nonAdditiveMeasures(q: MPQuery): number[] {
  return (q.measures ?? []).flatMap((m, i) => (ADDITIVE_MEASURES.includes(m.type) ? [] : [i]));
}
