import { plugin } from '../src/module';
import { DataSource } from '../src/datasource';
import { instanceSettings } from './helpers';

describe('module', () => {
  it('exports the plugin with its editors, variable and annotation support', () => {
    expect(plugin.DataSourceClass).toBe(DataSource);
    expect(plugin.components.ConfigEditor).toBeDefined();
    expect(plugin.components.QueryEditor).toBeDefined();
    const ds = new DataSource(instanceSettings());
    expect((ds.variables as any).editor).toBeDefined();
    expect(ds.annotations?.QueryEditor).toBeDefined();
  });
});
