import { MPQuery } from '../src/types';
import { validate, withMacrosAsPlaceholders } from '../src/validate';
import { fixtureNames, loadFixture } from './helpers';

const fields = (q: MPQuery) => validate(q).map((p) => p.field);

describe('validate', () => {
  it('accepts every shared fixture', () => {
    for (const name of fixtureNames()) {
      expect([name, validate(loadFixture(name))]).toEqual([name, []]);
    }
  });

  it('names what an incomplete builder query lacks', () => {
    expect(fields({ refId: 'A', mode: 'builder', measures: [] })).toEqual(['eventType', 'measures']);
    expect(
      fields({
        refId: 'A',
        eventType: 'click',
        measures: [
          { type: 'avg' },
          { type: 'percentile', metric: 'x', percentile: 100 },
          { type: 'distinct' },
          { type: 'topk', k: 0 },
          { type: 'count', window: { minutes: 0 } },
        ],
      })
    ).toEqual([
      'measures.0.metric',
      'measures.1.percentile',
      'measures.2.key',
      'measures.3.attribute',
      'measures.3.k',
      'measures.4.window',
    ]);
  });

  it('checks filters, top N and compare', () => {
    expect(
      fields({
        refId: 'A',
        eventType: 'click',
        measures: [{ type: 'count' }],
        filters: [
          { dimension: '', op: 'eq', values: ['x'] },
          { dimension: 'country', op: 'eq', values: ['FR', 'DE'] },
          { dimension: 'country', op: 'in', values: [] },
        ],
        topN: { limit: 0, measure: 3, other: true },
        compare: { shift: 'yesterday' },
      })
    ).toEqual(['filters.0.dimension', 'filters.1.values', 'filters.2.values', 'topN.limit', 'topN.measure', 'topN', 'compare.shift']);
    expect(fields({ refId: 'A', eventType: 'x', measures: [{ type: 'count' }], compare: { shift: '$shift' } })).toEqual([]);
  });

  it('parses pipelines with macros and refuses writes', () => {
    const base: MPQuery = { refId: 'B', mode: 'pipeline', collection: 'events' };
    expect(fields({ ...base, pipeline: '' })).toEqual(['pipeline']);
    expect(fields({ ...base, pipeline: '[{"$match": $__timeFilter(timestamp)}' })).toEqual(['pipeline']);
    expect(fields({ ...base, pipeline: '{"$match": {}}' })).toEqual(['pipeline']);
    expect(fields({ ...base, pipeline: '[{"$merge": {"into": "x"}}]' })).toEqual(['pipeline']);
    expect(fields({ ...base, collection: 'users', pipeline: '[]' })).toEqual(['collection']);
    // A bare variable outside strings cannot be checked before Grafana replaces it.
    expect(fields({ ...base, pipeline: '[{"$limit": $limit}]' })).toEqual([]);
    expect(
      JSON.parse(withMacrosAsPlaceholders('[{"$match": {"t": {"$gte": $__timeFrom, "$lt": $__timeTo}}}, {"$bucketAuto": {"n": $__interval_ms}}]'))
    ).toHaveLength(2);
  });

  it('checks variable and annotation queries', () => {
    expect(fields({ refId: 'v', mode: 'variable', variable: 'dimensions' })).toEqual(['eventType']);
    expect(fields({ refId: 'v', mode: 'variable', variable: 'dimensionValues' })).toEqual(['dimension']);
    expect(fields({ refId: 'v', mode: 'variable' })).toEqual(['variable']);
    expect(fields({ refId: 'Anno', mode: 'annotations', states: [] })).toEqual(['states']);
  });
});
