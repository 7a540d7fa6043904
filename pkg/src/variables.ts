import { CustomVariableSupport, DataQueryRequest, DataQueryResponse } from '@grafana/data';
import { Observable } from 'rxjs';

import { VariableQueryEditor } from './components/VariableQueryEditor';
import type { DataSource } from './datasource';
import { MPQuery, toVariableQuery } from './types';

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
