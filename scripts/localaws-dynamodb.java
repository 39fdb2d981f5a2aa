// Starts DynamoDB Local bound to 127.0.0.1 only. DynamoDB Local has no host flag and binds every
// interface, so this launcher builds the server from the usual command-line arguments and sets
// the host on its Jetty connectors (found by reflection) before starting it. Compiled by
// scripts/localaws-install.sh; run as java -cp DynamoDBLocal.jar:DynamoDBLocal_lib/*:DIR
// LoopbackDynamoDB ARGS.
import java.lang.reflect.Field;
import java.lang.reflect.Method;

public class LoopbackDynamoDB {
    public static void main(String[] args) throws Exception {
        Class<?> runner = Class.forName("com.amazonaws.services.dynamodbv2.local.main.ServerRunner");
        Object proxy = runner.getMethod("createServerFromCommandLineArgs", String[].class)
                .invoke(null, (Object) args);
        Field f = proxy.getClass().getDeclaredField("server");
        f.setAccessible(true);
        Object server = f.get(proxy);
        Object[] connectors = (Object[]) server.getClass().getMethod("getConnectors").invoke(server);
        if (connectors.length == 0) {
            throw new IllegalStateException("DynamoDB Local has no connector to pin to 127.0.0.1");
        }
        for (Object c : connectors) {
            Method setHost = c.getClass().getMethod("setHost", String.class);
            setHost.invoke(c, "127.0.0.1");
        }
        proxy.getClass().getMethod("start").invoke(proxy);
        proxy.getClass().getMethod("join").invoke(proxy);
    }
}
