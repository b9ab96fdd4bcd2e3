import java.util.List;

import jep.SharedInterpreter;

/**
 * Runs s2sr.deploy.geopyspark's plan in real Jep interpreters, as the geopyspark executor
 * (openeo-geotrellis-extensions Udf.scala) does: a control interpreter reads the plan (a list
 * of interpreters, each a list of code strings), then every entry runs in a NEW
 * SharedInterpreter (fresh globals, shared sys.modules), closed after it.
 *
 * Usage: java -cp jep.jar:. JepRunner SPEC_DIR SITE_PACKAGES
 */
public class JepRunner {
    public static void main(String[] args) throws Exception {
        String spec = args[0];
        String site = args[1];
        List<?> plan;
        try (SharedInterpreter control = new SharedInterpreter()) {
            control.set("site_dir", site);
            control.set("spec_dir", spec);
            control.exec("import site; site.addsitedir(site_dir)");
            control.exec("from s2sr.deploy import geopyspark");
            plan = (List<?>) control.getValue("geopyspark.jep_plan(spec_dir)");
        }
        for (Object steps : plan) {
            try (SharedInterpreter interp = new SharedInterpreter()) {
                for (Object code : (List<?>) steps) {
                    interp.exec((String) code);
                }
            }
        }
    }
}
