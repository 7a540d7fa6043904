import { DataSourcePlugin } from '@grafana/data';

import { ConfigEditor } from './components/ConfigEditor';
import { QueryEditor } from './components/QueryEditor';
import { DataSource } from './datasource';
import { MPOptions, MPQuery, MPSecureJsonData } from './types';

export const plugin = new DataSourcePlugin<DataSource, MPQuery, MPOptions, MPSecureJsonData>(DataSource)
  .setConfigEditor(ConfigEditor)
  .setQueryEditor(QueryEditor);
