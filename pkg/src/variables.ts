import { CustomVariableSupport, DataQueryRequest, DataQueryResponse } from '@grafana/data';
import { Observable } from 'rxjs';

import { VariableQueryEditor } from './components/VariableQueryEditor';
import type { DataSource } from './datasource';
import { defaultVariableQuery, MPQuery } from './types';

/**
 * Template variables (event types, dimensions, dimension values) run as
 * `mode: "variable"` queries through QueryData, so the backend answers them in
 * the dashboard's time range like any panel query.
 */
export class MongoPulseVariableSupport extends CustomVariableSupport<DataSource, MPQuery> {
  editor = VariableQueryEditor;

  constructor(private readonly datasource: DataSource) {
    super();
    this.query = this.query.bind(this);
  }

  query(request: DataQueryRequest<MPQuery>): Observable<DataQueryResponse> {
    const targets = request.targets.map((t) => toVariableQuery(t));
    return this.datasource.runVariableQuery({ ...request, targets });
  }
}

/** A stored variable query (possibly from an older dashboard) in the current shape. */
export function toVariableQuery(t: Partial<MPQuery> | string | undefined): MPQuery {
  const q: Partial<MPQuery> = typeof t === 'object' && t !== null ? t : {};
  return { ...defaultVariableQuery(), ...q, mode: 'variable', refId: q.refId || 'variable' };
}
